//! The few S3 calls the example makes, path-style, over
//! [`wharf_sdk::http`] (`wasi:http` on wasm32), signed with AWS Signature
//! Version 4 (`hmac` + `sha2`): PutObject (with tagging and
//! `If-None-Match: *`), GetObject, GetObjectTagging, PutObjectTagging,
//! ListObjectsV2 and CreateBucket.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wharf_sdk::http::{Request, Response};

type HmacSha256 = Hmac<Sha256>;

/// Where the bucket is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://host:port`, no trailing slash.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub timeout: Duration,
}

/// A failed call: no response, or one with an unexpected status.
#[derive(Debug)]
pub enum S3Error {
    Io(std::io::Error),
    Status { op: &'static str, status: u16, code: String },
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Error::Io(e) => write!(f, "{e}"),
            S3Error::Status { op, status, code } => write!(f, "{op}: HTTP {status} {code}"),
        }
    }
}

impl std::error::Error for S3Error {}

impl From<std::io::Error> for S3Error {
    fn from(e: std::io::Error) -> Self {
        S3Error::Io(e)
    }
}

/// How a conditional put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// `If-None-Match: *` failed: an object is already there.
    AlreadyThere,
}

/// One page of ListObjectsV2: keys, and the token of the next page.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub keys: Vec<String>,
    pub next: Option<String>,
}

impl S3 {
    /// PutObject with `x-amz-tagging` and `If-None-Match: *`.
    pub fn put_new(&self, key: &str, body: &[u8], tagging: &str) -> Result<Put, S3Error> {
        let headers =
            [("content-type", "application/json"), ("if-none-match", "*"), ("x-amz-tagging", tagging)];
        let r = self.send("PUT", &self.object_path(key), &[], &headers, body)?;
        match r.status {
            200..=299 => Ok(Put::Created),
            412 => Ok(Put::AlreadyThere),
            _ => Err(status_error("PutObject", &r)),
        }
    }

    /// GetObject: the bytes, or `None` if there is no such key.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let r = self.send("GET", &self.object_path(key), &[], &[], &[])?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(status_error("GetObject", &r)),
        }
    }

    /// GetObjectTagging: the tags as (key, value) pairs.
    pub fn tags(&self, key: &str) -> Result<Vec<(String, String)>, S3Error> {
        let r = self.send("GET", &self.object_path(key), &[("tagging", "")], &[], &[])?;
        if r.status != 200 {
            return Err(status_error("GetObjectTagging", &r));
        }
        let text = r.text();
        let mut out = Vec::new();
        for tag in xml_all(&text, "Tag") {
            if let (Some(k), Some(v)) = (xml_first(tag, "Key"), xml_first(tag, "Value")) {
                out.push((xml_unescape(k), xml_unescape(v)));
            }
        }
        Ok(out)
    }

    /// PutObjectTagging: replaces the object's tags.
    pub fn set_tags(&self, key: &str, tags: &[(&str, &str)]) -> Result<(), S3Error> {
        let mut body = String::from("<Tagging><TagSet>");
        for (k, v) in tags {
            body.push_str(&format!(
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                xml_escape(k),
                xml_escape(v)
            ));
        }
        body.push_str("</TagSet></Tagging>");
        let headers = [("content-type", "application/xml")];
        let r = self.send("PUT", &self.object_path(key), &[("tagging", "")], &headers, body.as_bytes())?;
        if r.is_success() { Ok(()) } else { Err(status_error("PutObjectTagging", &r)) }
    }

    /// ListObjectsV2: one page of up to `max` keys after `start_after`, or
    /// from `token` (a previous page's `next`).
    pub fn list(&self, start_after: Option<&str>, token: Option<&str>, max: u32) -> Result<Listing, S3Error> {
        let max = max.to_string();
        let mut query = vec![("list-type", "2"), ("max-keys", max.as_str())];
        if let Some(t) = token {
            query.push(("continuation-token", t));
        } else if let Some(s) = start_after {
            query.push(("start-after", s));
        }
        let r = self.send("GET", &format!("/{}", self.bucket), &query, &[], &[])?;
        if r.status != 200 {
            return Err(status_error("ListObjectsV2", &r));
        }
        let text = r.text();
        let keys = xml_all(&text, "Contents").filter_map(|c| xml_first(c, "Key")).map(xml_unescape).collect();
        let truncated = xml_first(&text, "IsTruncated") == Some("true");
        let next = xml_first(&text, "NextContinuationToken").filter(|_| truncated).map(xml_unescape);
        Ok(Listing { keys, next })
    }

    /// CreateBucket (already there and ours is fine).
    pub fn create_bucket(&self) -> Result<(), S3Error> {
        let r = self.send("PUT", &format!("/{}", self.bucket), &[], &[], &[])?;
        if r.is_success() || r.text().contains("BucketAlreadyOwnedByYou") {
            Ok(())
        } else {
            Err(status_error("CreateBucket", &r))
        }
    }

    fn object_path(&self, key: &str) -> String {
        format!("/{}/{}", self.bucket, key.split('/').map(uri_encode).collect::<Vec<_>>().join("/"))
    }

    /// Signs and sends one request. `path` is already URI-encoded.
    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, S3Error> {
        let authority = self.endpoint.split_once("://").map_or(self.endpoint.as_str(), |(_, rest)| rest);
        let mut q: Vec<(String, String)> =
            query.iter().map(|(k, v)| (uri_encode(k), uri_encode(v))).collect();
        q.sort();
        let query_string = q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let payload_hash = hex::encode(Sha256::digest(body));
        let amz_date = amz_date(wharf_sdk::now_ms());
        let date = &amz_date[..8];

        let mut signed: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())).collect();
        signed.push(("host".into(), authority.to_string()));
        signed.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        signed.push(("x-amz-date".into(), amz_date.clone()));
        signed.sort();
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = signed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        let canonical_request = format!(
            "{method}\n{path}\n{query_string}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{}", self.secret_key).as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        );

        let url = if query_string.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{query_string}", self.endpoint)
        };
        let mut req = Request::new(method, url).timeout(self.timeout).body(body.to_vec());
        for (k, v) in &signed {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        req = req.header("authorization", authorization);
        Ok(req.send()?)
    }
}

fn status_error(op: &'static str, r: &Response) -> S3Error {
    let text = r.text();
    let code = xml_first(&text, "Code").unwrap_or("").to_string();
    S3Error::Status { op, status: r.status, code }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// SigV4's URI encoding: everything but unreserved characters as %XX.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time in ms (UTC).
pub fn amz_date(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z")
}

/// The inner text of each `<tag>...</tag>` in `xml`.
fn xml_all<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let inner = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(inner)
    })
}

fn xml_first<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    xml_all(xml, tag).next()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_are_utc_calendar_times() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_440_938_160_000), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400_000), "20000229T000000Z");
    }

    #[test]
    fn the_signing_key_matches_aws_documentation() {
        // docs.aws.amazon.com "Deriving the signing key" example.
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(hex::encode(key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn listings_and_tags_parse() {
        let xml = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a/1.json</Key></Contents>\
                   <Contents><Key>a&amp;b/2.json</Key></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let keys: Vec<_> =
            xml_all(xml, "Contents").filter_map(|c| xml_first(c, "Key")).map(xml_unescape).collect();
        assert_eq!(keys, ["a/1.json", "a&b/2.json"]);
        assert_eq!(xml_first(xml, "NextContinuationToken"), Some("t1"));
        assert_eq!(uri_encode("a b/c"), "a%20b%2Fc");
    }
}
