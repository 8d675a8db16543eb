//! From a Wharf message to CQL bind values: the statement syntax (named
//! markers), JSON → CQL value encoding, and the write timestamp.
//!
//! Named markers: `:name` outside quotes binds the payload's JSON field
//! `name`; `:wharf_key`, `:wharf_id` and `:wharf_timestamp` bind the message
//! key, the message id and the write timestamp (micros). They are rewritten
//! to positional `?` markers before PREPARE, so the order of `names` is the
//! order of the bind values.

use base64::Engine as _;
use cassandra_protocol::frame::message_result::{ColSpec, ColType};
use cassandra_protocol::types::value::Value;
use serde_json::{Map, Value as Json};
use wharf_sdk::{Error, Message};

pub const KEY: &str = "wharf_key";
pub const ID: &str = "wharf_id";
pub const TIMESTAMP: &str = "wharf_timestamp";

/// The write timestamp of a message, in microseconds since the epoch:
/// `written_at_ms * 1000 + sequence % 1000`. On the embedded log later
/// client writes of a partition get larger timestamps: the host stamps the
/// write time in sequence order so that this never goes back (see
/// docs/plugins.md, "Timestamps").
pub fn timestamp_micros(msg: &Message) -> i64 {
    let micros = u128::from(msg.written_at_ms) * 1000 + u128::from(msg.sequence % 1000);
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// A configured statement, rewritten for PREPARE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The CQL with every `:name` replaced by `?`.
    pub cql: String,
    /// The marker names, in order.
    pub names: Vec<String>,
    /// The statement is conditional (`IF ...`, a lightweight transaction).
    pub conditional: bool,
}

impl Statement {
    /// The default mapping: the payload is the row as a JSON object.
    pub fn json_insert(keyspace: &str, table: &str) -> Statement {
        Statement {
            cql: format!("INSERT INTO {keyspace}.{table} JSON ? USING TIMESTAMP ?"),
            names: vec![String::new(), TIMESTAMP.to_string()],
            conditional: false,
        }
    }

    /// Parse a configured statement. `Err` is the reason, for a config error.
    pub fn parse(text: &str) -> Result<Statement, String> {
        let mut cql = String::with_capacity(text.len());
        let mut names = Vec::new();
        let mut chars = text.char_indices().peekable();
        let mut quote: Option<char> = None;
        while let Some((_, c)) = chars.next() {
            if let Some(q) = quote {
                cql.push(c);
                if c == q {
                    quote = None;
                }
                continue;
            }
            match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cql.push(c);
                }
                '?' => return Err("use named markers (`:field`), not `?`".to_string()),
                ':' => {
                    let mut name = String::new();
                    while let Some(&(_, n)) = chars.peek() {
                        if n.is_ascii_alphanumeric() || n == '_' {
                            name.push(n);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                        return Err("`:` must start a marker name such as `:id`".to_string());
                    }
                    cql.push('?');
                    names.push(name);
                }
                _ => cql.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".to_string());
        }
        let conditional = has_word(&cql, "IF");
        let has_ts = names.iter().any(|n| n == TIMESTAMP);
        if conditional && has_ts {
            return Err("a conditional (IF) statement cannot carry USING TIMESTAMP".to_string());
        }
        if !conditional && !has_ts {
            return Err(format!(
                "must contain `USING TIMESTAMP :{TIMESTAMP}` so that an older message never overwrites a newer one"
            ));
        }
        Ok(Statement { cql, names, conditional })
    }
}

/// `word` as a whole word, case-insensitively, outside quotes.
fn has_word(cql: &str, word: &str) -> bool {
    let mut unquoted = String::new();
    let mut quote = None;
    for c in cql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => unquoted.push(c),
        }
    }
    unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w.eq_ignore_ascii_case(word))
}

/// The payload as a JSON object, or a reject.
pub fn payload_object(msg: &Message) -> Result<Map<String, Json>, Error> {
    match serde_json::from_slice::<Json>(&msg.payload) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(Error::reject("payload is JSON but not an object; the cassandra target needs one")),
        Err(e) => Err(Error::reject(format!("payload is not JSON: {e}"))),
    }
}

/// The bind values of `msg` for a prepared statement with `specs`.
pub fn bind(stmt: &Statement, specs: &[ColSpec], msg: &Message) -> Result<Vec<Value>, Error> {
    if specs.len() != stmt.names.len() {
        return Err(Error::reject(format!(
            "the server reports {} bind markers, the statement has {}",
            specs.len(),
            stmt.names.len()
        )));
    }
    let needs_fields = stmt.names.iter().any(|n| ![KEY, ID, TIMESTAMP].contains(&n.as_str()));
    let fields = if needs_fields { payload_object(msg)? } else { Map::new() };
    let mut values = Vec::with_capacity(specs.len());
    for (name, spec) in stmt.names.iter().zip(specs) {
        let value = match name.as_str() {
            // The JSON insert: the payload as it is.
            "" => {
                payload_object(msg)?;
                Value::Some(msg.payload.clone())
            }
            TIMESTAMP => Value::Some(timestamp_micros(msg).to_be_bytes().to_vec()),
            KEY => match &msg.key {
                Some(k) => encode(&Json::String(k.clone()), &spec.col_type.id)
                    .map_err(|e| Error::reject(format!(":{KEY} into `{}`: {e}", spec.name)))?,
                None => return Err(Error::reject(format!("message has no key; the statement binds :{KEY}"))),
            },
            ID => encode(&Json::String(msg.id.clone()), &spec.col_type.id)
                .map_err(|e| Error::reject(format!(":{ID} into `{}`: {e}", spec.name)))?,
            field => match fields.get(field) {
                Some(v) => encode(v, &spec.col_type.id).map_err(|e| {
                    Error::reject(format!("payload field `{field}` into `{}`: {e}", spec.name))
                })?,
                None => {
                    return Err(Error::reject(format!("payload has no field `{field}` (marker :{field})")));
                }
            },
        };
        values.push(value);
    }
    Ok(values)
}

/// One JSON value as the CQL serialisation of `ty`.
pub fn encode(v: &Json, ty: &ColType) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let int = |min: i64, max: i64| -> Result<i64, String> {
        v.as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("{v} is not a {ty:?} (an integer)"))
    };
    let bytes = match ty {
        ColType::Ascii | ColType::Varchar => {
            v.as_str().ok_or_else(|| format!("{v} is not a string"))?.as_bytes().to_vec()
        }
        ColType::Boolean => vec![u8::from(v.as_bool().ok_or_else(|| format!("{v} is not a boolean"))?)],
        ColType::Tinyint => (int(i8::MIN.into(), i8::MAX.into())? as i8).to_be_bytes().to_vec(),
        ColType::Smallint => (int(i16::MIN.into(), i16::MAX.into())? as i16).to_be_bytes().to_vec(),
        ColType::Int => (int(i32::MIN.into(), i32::MAX.into())? as i32).to_be_bytes().to_vec(),
        ColType::Bigint | ColType::Timestamp | ColType::Counter => {
            int(i64::MIN, i64::MAX)?.to_be_bytes().to_vec()
        }
        ColType::Double => v.as_f64().ok_or_else(|| format!("{v} is not a number"))?.to_be_bytes().to_vec(),
        ColType::Float => {
            (v.as_f64().ok_or_else(|| format!("{v} is not a number"))? as f32).to_be_bytes().to_vec()
        }
        ColType::Uuid | ColType::Timeuuid => {
            uuid(v.as_str().ok_or_else(|| format!("{v} is not a uuid string"))?)?
        }
        ColType::Blob => base64::engine::general_purpose::STANDARD
            .decode(v.as_str().ok_or_else(|| format!("{v} is not a base64 string"))?)
            .map_err(|e| format!("not base64: {e}"))?,
        other => {
            return Err(format!("type {other:?} is not supported by named markers; use the JSON mapping"));
        }
    };
    Ok(Value::Some(bytes))
}

fn uuid(s: &str) -> Result<Vec<u8>, String> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return Err(format!("{s:?} is not a uuid"));
    }
    (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| format!("{s:?} is not a uuid")))
        .collect()
}
