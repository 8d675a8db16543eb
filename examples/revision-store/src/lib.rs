//! Wharf example target: a revision store that writes each revision in
//! seed 000's strict order, S3 first, and converges with a reconciler.
//!
//! Per message (key = entity id, payload = the revision document, a JSON
//! object with at least a numeric `rev`):
//!
//! 1. PUT the immutable snapshot `<entity>/<rev>.json` to S3, tagged
//!    `state=pending`, with `If-None-Match: *`. A 412 means it is already
//!    there: the same bytes are a redelivery (go on), other bytes are a
//!    conflicting revision (rejected: history is immutable).
//! 2. `INSERT IGNORE` the revision row into MySQL/MariaDB (`revisions`).
//! 3. Move the head forward only: `heads.rev = GREATEST(rev, new)`.
//! 4. Retag the snapshot `state=published`.
//!
//! Every step is idempotent, so a retry after a failure at any point redoes
//! the steps and converges. [`Target::reconcile`] repairs what a message
//! that never comes back left behind (seed 000's reconciler): heads that lag
//! the highest stored revision, and snapshots still tagged `pending` (their
//! row is recreated from the snapshot, the head advanced, the tag set to
//! `published`). See README.md.

pub mod mysql;
pub mod s3;

use std::time::Duration;

use sha2::{Digest, Sha256};
use wharf_sdk::{Config, Error, Message, Reconciled, Target, log};

use mysql::{Conn, MysqlError, Options};
use s3::{Put, S3, S3Error};

/// The tag of a snapshot whose row and head may not be written yet...
pub const PENDING: &str = "pending";
/// ...and of one whose row and head are.
pub const PUBLISHED: &str = "published";
/// Keys per ListObjectsV2 page in a reconcile pass.
const LIST_PAGE: u32 = 200;
/// At most this many error reasons per reconcile pass.
const MAX_ERRORS: usize = 10;

/// The tables, created on each new connection if missing. Entity ids are
/// ASCII and compared byte for byte (`ascii_bin`).
pub const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS revisions (\
       entity VARCHAR(191) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
       rev BIGINT UNSIGNED NOT NULL, \
       s3_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
       sha256 CHAR(64) CHARACTER SET ascii NOT NULL, \
       bytes BIGINT UNSIGNED NOT NULL, \
       PRIMARY KEY (entity, rev))",
    "CREATE TABLE IF NOT EXISTS heads (\
       entity VARCHAR(191) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
       rev BIGINT UNSIGNED NOT NULL)",
];

#[derive(Debug)]
pub struct RevisionStore {
    s3: S3,
    db: Options,
    conn: Option<Conn>,
    /// Where the next reconcile pass goes on scanning the bucket (the last
    /// key it looked at), so that passes with a small budget still cover it.
    scan_after: Option<String>,
}

/// The object key of an entity's revision.
pub fn snapshot_key(entity: &str, rev: u64) -> String {
    format!("{entity}/{rev}.json")
}

/// An entity id fit for an object key and a row: 1 to 191 of
/// `[A-Za-z0-9._~-]`, starting with a letter or digit.
pub fn valid_entity(entity: &str) -> bool {
    (1..=191).contains(&entity.len())
        && entity.as_bytes()[0].is_ascii_alphanumeric()
        && entity.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// `<entity>/<rev>.json` back into its parts.
pub fn parse_snapshot_key(key: &str) -> Option<(&str, u64)> {
    let (entity, file) = key.split_once('/')?;
    let rev = file.strip_suffix(".json")?.parse().ok()?;
    (valid_entity(entity) && snapshot_key(entity, rev) == key).then_some((entity, rev))
}

/// The `rev` of a revision document.
pub fn document_rev(payload: &[u8]) -> Result<u64, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    doc.get("rev")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "the payload has no numeric `rev` (a non-negative integer)".to_string())
}

fn s3_error(e: S3Error) -> Error {
    Error::retry(format!("S3: {e}"))
}

fn db_error(e: MysqlError) -> Error {
    Error::retry(format!("MySQL: {e}"))
}

impl Target for RevisionStore {
    fn init(config: Config) -> Result<Self, Error> {
        let endpoint = config.require("s3_endpoint")?.trim_end_matches('/').to_string();
        wharf_sdk::http::Url::parse(&endpoint)
            .map_err(|e| Error::reject(format!("config key `s3_endpoint`: {e}")))?;
        let timeout = Duration::from_millis(config.parse_or("timeout_ms", 3000u64)?);
        let s3 = S3 {
            endpoint,
            bucket: config.require("bucket")?.to_string(),
            region: config.get_or("region", "us-east-1").to_string(),
            access_key: config.require("access_key")?.to_string(),
            secret_key: config.require("secret_key")?.to_string(),
            timeout,
        };
        let addr = config.require("mysql")?.to_string();
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::reject(format!("config key `mysql`: {addr:?} is not an ip:port")));
        }
        let db = Options {
            addr,
            user: config.require("user")?.to_string(),
            password: config.get_or("password", "").to_string(),
            database: config.require("database")?.to_string(),
            timeout,
        };
        Ok(RevisionStore { s3, db, conn: None, scan_after: None })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        let Some(entity) = msg.key.as_deref() else {
            return Err(Error::reject("no key: the key is the entity id"));
        };
        if !valid_entity(entity) {
            return Err(Error::reject(format!(
                "entity id {entity:?}: 1 to 191 of [A-Za-z0-9._~-], starting with a letter or digit"
            )));
        }
        let rev = document_rev(&msg.payload).map_err(Error::reject)?;
        let key = snapshot_key(entity, rev);

        // 1. The immutable snapshot, pending.
        match self.s3.put_new(&key, &msg.payload, &format!("state={PENDING}")).map_err(s3_error)? {
            Put::Created => {}
            Put::AlreadyThere => match self.s3.get(&key).map_err(s3_error)? {
                Some(stored) if stored == msg.payload => {}
                Some(_) => {
                    return Err(Error::reject(format!(
                        "{key} is already stored with other content: a revision is immutable"
                    )));
                }
                None => return Err(Error::retry(format!("{key}: 412 on put but not found on get"))),
            },
        }
        // 2 and 3. The row, then the head (forward only).
        self.with_db(|c| publish_row(c, entity, rev, &msg.payload).map(|_| ())).map_err(db_error)?;
        // 4. Published.
        self.s3.set_tags(&key, &[("state", PUBLISHED)]).map_err(s3_error)?;
        Ok(())
    }

    /// Seed 000's reconciler, within `budget_ms`: heads lagging the highest
    /// stored revision are advanced, then the bucket is scanned (going on
    /// where the last pass stopped, at least one object per pass) for
    /// snapshots tagged `pending`, whose row is recreated, head advanced and
    /// tag set to `published`. A store out of reach ends the pass.
    fn reconcile(&mut self, budget_ms: u64) -> Reconciled {
        let deadline = wharf_sdk::now_ms().saturating_add(budget_ms);
        let mut out = Reconciled::default();
        let error = |out: &mut Reconciled, e: String| {
            if out.errors.len() < MAX_ERRORS {
                out.errors.push(e);
            }
        };
        match self.with_db(advance_lagging_heads) {
            Ok(n) => out.repaired += n,
            Err(e) => error(&mut out, format!("heads: MySQL: {e}")),
        }
        let mut token: Option<String> = None;
        let mut looked = 0u64;
        'scan: while wharf_sdk::now_ms() < deadline {
            let page = match self.s3.list(self.scan_after.as_deref(), token.as_deref(), LIST_PAGE) {
                Ok(p) => p,
                Err(e) => {
                    error(&mut out, format!("scan: S3: {e}"));
                    break;
                }
            };
            for key in &page.keys {
                // At least one object per pass, however small the budget.
                if looked > 0 && wharf_sdk::now_ms() >= deadline {
                    break 'scan;
                }
                looked += 1;
                let result = self.repair_snapshot(key);
                self.scan_after = Some(key.clone());
                match result {
                    Ok(true) => out.repaired += 1,
                    Ok(false) => {}
                    Err(Failure { reason, unreachable }) => {
                        error(&mut out, format!("{key}: {reason}"));
                        // S3 or the database is down: the next pass tries again.
                        if unreachable {
                            break 'scan;
                        }
                    }
                }
            }
            match page.next {
                Some(t) => token = Some(t),
                None => {
                    // The end of the bucket: the next pass starts again.
                    self.scan_after = None;
                    break;
                }
            }
        }
        if out.repaired > 0 || !out.errors.is_empty() {
            log::info(format!("reconcile: {} repaired, {} errors", out.repaired, out.errors.len()));
        }
        out
    }
}

impl RevisionStore {
    /// Runs `f` on a connection, connecting (and creating the tables) first
    /// if needed; a broken connection is dropped for the next call.
    fn with_db<T>(&mut self, f: impl FnOnce(&mut Conn) -> Result<T, MysqlError>) -> Result<T, MysqlError> {
        if self.conn.is_none() {
            let mut c = Conn::connect(&self.db)?;
            for ddl in SCHEMA {
                c.exec(ddl)?;
            }
            self.conn = Some(c);
        }
        let Some(conn) = self.conn.as_mut() else { unreachable!() };
        let r = f(conn);
        if let Err(e) = &r
            && !e.connection_ok()
        {
            self.conn = None;
        }
        r
    }

    /// One object of the scan: if its snapshot is pending, recreate its
    /// row, advance its head and mark it published. Whether it was pending.
    fn repair_snapshot(&mut self, key: &str) -> Result<bool, Failure> {
        let Some((entity, rev)) = parse_snapshot_key(key) else { return Ok(false) };
        let tags = self.s3.tags(key).map_err(Failure::s3)?;
        if !tags.iter().any(|(k, v)| k == "state" && v == PENDING) {
            return Ok(false);
        }
        let Some(body) = self.s3.get(key).map_err(Failure::s3)? else { return Ok(false) };
        let doc_rev = document_rev(&body).map_err(Failure::content)?;
        if doc_rev != rev {
            return Err(Failure::content(format!("the snapshot's rev is {doc_rev}, its key says {rev}")));
        }
        self.with_db(|c| publish_row(c, entity, rev, &body))
            .map_err(|e| Failure { unreachable: !e.connection_ok(), reason: format!("MySQL: {e}") })?;
        self.s3.set_tags(key, &[("state", PUBLISHED)]).map_err(Failure::s3)?;
        Ok(true)
    }
}

/// Why one object could not be repaired, and whether a store was out of
/// reach (which ends the pass) or only this object is wrong.
#[derive(Debug)]
struct Failure {
    reason: String,
    unreachable: bool,
}

impl Failure {
    fn s3(e: S3Error) -> Failure {
        Failure { unreachable: matches!(e, S3Error::Io(_)), reason: format!("S3: {e}") }
    }

    fn content(reason: String) -> Failure {
        Failure { reason, unreachable: false }
    }
}

/// Steps 2 and 3: the revision row (kept if already there), then the head,
/// moved forward only. Whether the head moved.
pub fn publish_row(c: &mut Conn, entity: &str, rev: u64, snapshot: &[u8]) -> Result<bool, MysqlError> {
    let (e, k) = (c.quote(entity), c.quote(&snapshot_key(entity, rev)));
    let digest = hex::encode(Sha256::digest(snapshot));
    c.exec(&format!(
        "INSERT IGNORE INTO revisions (entity, rev, s3_key, sha256, bytes) VALUES ({e}, {rev}, {k}, '{digest}', {})",
        snapshot.len()
    ))?;
    let moved = c.exec(&format!(
        "INSERT INTO heads (entity, rev) VALUES ({e}, {rev}) ON DUPLICATE KEY UPDATE rev = GREATEST(rev, VALUES(rev))"
    ))?;
    Ok(moved.affected_rows > 0)
}

/// Heads missing or behind the highest revision row of their entity are
/// moved to it (forward only). How many moved.
pub fn advance_lagging_heads(c: &mut Conn) -> Result<u64, MysqlError> {
    let lagging = c.rows(
        "SELECT r.entity, r.top FROM (SELECT entity, MAX(rev) AS top FROM revisions GROUP BY entity) r \
         LEFT JOIN heads h ON h.entity = r.entity WHERE h.rev IS NULL OR h.rev < r.top",
    )?;
    let mut moved = 0;
    for row in lagging {
        let (Some(Some(entity)), Some(Some(top))) = (row.first(), row.get(1)) else { continue };
        let Ok(top) = top.parse::<u64>() else { continue };
        let e = c.quote(entity);
        let done = c.exec(&format!(
            "INSERT INTO heads (entity, rev) VALUES ({e}, {top}) ON DUPLICATE KEY UPDATE rev = GREATEST(rev, VALUES(rev))"
        ))?;
        if done.affected_rows > 0 {
            moved += 1;
        }
    }
    Ok(moved)
}

wharf_sdk::export_target!(RevisionStore);

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_sdk::testing::{Harness, message};

    #[test]
    fn keys_and_documents() {
        assert_eq!(parse_snapshot_key("order-1/12.json"), Some(("order-1", 12)));
        assert_eq!(parse_snapshot_key("order-1/012.json"), None);
        assert_eq!(parse_snapshot_key("../1.json"), None);
        assert!(!valid_entity("") && !valid_entity(".x") && !valid_entity("a/b") && valid_entity("A-1.b"));
        assert_eq!(document_rev(br#"{"rev": 3, "x": 1}"#), Ok(3));
        assert!(document_rev(br#"{"rev": -1}"#).is_err() && document_rev(b"nope").is_err());
    }

    #[test]
    fn what_can_never_be_stored_is_rejected_and_config_is_checked() {
        let cfg = [
            ("s3_endpoint", "http://127.0.0.1:1"),
            ("bucket", "b"),
            ("access_key", "a"),
            ("secret_key", "s"),
            ("mysql", "127.0.0.1:1"),
            ("user", "u"),
            ("database", "d"),
        ];
        let mut p = Harness::<RevisionStore>::init(&cfg).expect("init");
        let out = p.deliver(vec![
            message(r#"{"rev": 1}"#),
            message(r#"{"rev": 1}"#).with_key("a/b"),
            message("{}").with_key("e1"),
            message(r#"{"rev": 1}"#).with_key("e1"),
        ]);
        assert!(out[0].is_reject() && out[1].is_reject() && out[2].is_reject(), "{out:?}");
        assert!(out[3].is_retry(), "nothing listens: retry, {out:?}");
        let mut bad = cfg.to_vec();
        bad[4] = ("mysql", "db.example:3306");
        let err = Harness::<RevisionStore>::init(&bad).expect_err("a host name");
        assert!(err.contains("`mysql`"), "{err}");
    }
}
