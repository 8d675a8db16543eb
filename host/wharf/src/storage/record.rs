//! The one encoding of every host record kept in a log (message envelopes,
//! DLQ entries, idempotency keys): a version byte, then postcard. A record
//! that does not decode is an error naming why, never a guess.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record is empty")]
    Empty,
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("record is {len} bytes, shorter than its fixed header")]
    Short { len: usize },
    #[error("record does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Encoding plain data into a Vec cannot fail.
    out.extend(postcard::to_stdvec(value).unwrap_or_default());
    out
}

pub fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&v, rest)) if v == version => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(DecodeError::Version(v)),
    }
}
