//! Wharf target plugin: write each message to Apache Cassandra over the CQL
//! native protocol v4.
//!
//! Config (`[namespaces.<ns>.target] config = { ... }`; docs/plugins.md has
//! the full story):
//! - `contact_points` (required): comma-separated `ip:port`; the plugin uses
//!   one at a time and fails over to the next on a connection error.
//! - `keyspace`, `table` (required).
//! - `statement` (optional): CQL with named markers (`:field`, `:wharf_key`,
//!   `:wharf_id`, `:wharf_timestamp`; see `mapping`). Without it the payload
//!   is a JSON object and the plugin runs
//!   `INSERT INTO <keyspace>.<table> JSON ? USING TIMESTAMP ?`.
//! - `consistency` (default `LOCAL_QUORUM`), `serial_consistency` (default
//!   `LOCAL_SERIAL`, sent only for a conditional `IF` statement).
//! - `username`, `password` (optional, PasswordAuthenticator). Neither is
//!   ever shown: they are masked out of the server's error messages.
//! - `timeout_ms` (default `5000`).
//!
//! Every write carries `USING TIMESTAMP` from the message's write time and
//! sequence, so a redelivered older message never overwrites a newer one.
//! A delivery batch becomes UNLOGGED batches, one per partition key; a
//! transaction becomes one LOGGED batch.

mod conn;
pub mod mapping;

use std::time::Duration;

use cassandra_protocol::consistency::Consistency;
use cassandra_protocol::frame::Opcode;
use cassandra_protocol::frame::message_batch::{BatchQuery, BatchQuerySubj, BatchType, BodyReqBatch};
use cassandra_protocol::frame::message_error::ErrorType;
use cassandra_protocol::frame::message_execute::BodyReqExecuteOwned;
use cassandra_protocol::frame::message_prepare::BodyReqPrepare;
use cassandra_protocol::frame::message_query::BodyReqQuery;
use cassandra_protocol::frame::message_request::RequestBody;
use cassandra_protocol::frame::message_response::ResponseBody;
use cassandra_protocol::frame::message_result::{ColSpec, ResResultBody};
use cassandra_protocol::query::{QueryParams, QueryValues};
use cassandra_protocol::types::CBytesShort;
use cassandra_protocol::types::value::Value;
use wharf_sdk::{Batch, Config, Error, Message, Outcome, Target, log};

use conn::{Conn, Failure};
use mapping::Statement;

/// At most this many statements in one UNLOGGED batch...
const MAX_BATCH_STATEMENTS: usize = 50;
/// ...and at most this many bytes of bind values (Cassandra fails batches
/// over `batch_size_fail_threshold`, 50 KiB by default).
const MAX_BATCH_BYTES: usize = 32 * 1024;

#[derive(Debug)]
pub struct Cassandra {
    contact_points: Vec<String>,
    /// The contact point tried first on the next connect.
    current: usize,
    conn: Option<Conn>,
    credentials: Option<(String, String)>,
    keyspace: String,
    table: String,
    statement: Statement,
    /// The JSON mapping (no `statement` configured).
    json: bool,
    consistency: Consistency,
    serial_consistency: Consistency,
    timeout: Duration,
    /// The prepared-statement cache: the statement's id and bind types,
    /// kept across reconnects (ids are cluster-wide); re-prepared when a
    /// node answers UNPREPARED.
    prepared: Option<Prepared>,
    /// JSON mapping: the table's partition key columns, in order.
    partition_key: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Prepared {
    id: CBytesShort,
    specs: Vec<ColSpec>,
    pk_indexes: Vec<usize>,
}

/// One bound statement: its message index, partition key and values.
struct Bound {
    index: usize,
    partition: Vec<u8>,
    values: Vec<Value>,
}

impl Target for Cassandra {
    fn init(config: Config) -> Result<Self, Error> {
        let raw = config.require("contact_points")?;
        let mut contact_points = Vec::new();
        for part in raw.split(',') {
            let addr = part.trim();
            addr.parse::<std::net::SocketAddr>().map_err(|e| {
                Error::reject(format!("config key `contact_points`: {addr:?} is not an ip:port ({e})"))
            })?;
            contact_points.push(addr.to_string());
        }
        let keyspace = identifier(&config, "keyspace")?;
        let table = identifier(&config, "table")?;
        let (statement, json) = match config.get("statement").filter(|s| !s.trim().is_empty()) {
            Some(text) => (
                Statement::parse(text).map_err(|e| Error::reject(format!("config key `statement`: {e}")))?,
                false,
            ),
            None => (Statement::json_insert(&keyspace, &table), true),
        };
        let level = consistency(&config, "consistency", "LOCAL_QUORUM")?;
        let serial_consistency = consistency(&config, "serial_consistency", "LOCAL_SERIAL")?;
        let credentials = match (config.get("username"), config.get("password")) {
            (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
            (None, None) => None,
            _ => return Err(Error::reject("config keys `username` and `password` go together")),
        };
        let timeout_ms: u64 = config.parse_or("timeout_ms", 5000)?;
        if timeout_ms == 0 {
            return Err(Error::reject("config key `timeout_ms` must be greater than 0"));
        }
        let mut plugin = Cassandra {
            contact_points,
            current: 0,
            conn: None,
            credentials,
            keyspace,
            table,
            statement,
            json,
            consistency: level,
            serial_consistency,
            timeout: Duration::from_millis(timeout_ms),
            prepared: None,
            partition_key: None,
        };
        // Check credentials and the statement now when the cluster is
        // reachable; an unreachable cluster is not a config error.
        match plugin.prepare() {
            Ok(()) => {}
            Err(Failure::Io(e)) => log::warn(format!("cassandra target: not checked at init: {e}")),
            // A busy or restarting cluster is not a config error either;
            // refused credentials are.
            Err(Failure::Server(err))
                if conn::is_transient(&err.ty) && !matches!(err.ty, ErrorType::Authentication) =>
            {
                let (name, code) = conn::error_name(&err.ty);
                log::warn(format!(
                    "cassandra target: not checked at init: {name} (0x{code:04X}): {}",
                    plugin.scrub(&err.message)
                ));
            }
            Err(failure) => {
                let outcome = plugin.outcome(failure);
                return Err(Error::reject(format!("cassandra target: {}", reason(&outcome))));
            }
        }
        log::info(format!(
            "cassandra target: contact_points={:?} table={}.{} statement={:?}",
            plugin.contact_points, plugin.keyspace, plugin.table, plugin.statement.cql
        ));
        Ok(plugin)
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        Outcome::into_result(self.deliver(&Batch::new(vec![msg.clone()])).pop())
    }

    fn deliver(&mut self, batch: &Batch) -> Vec<Outcome> {
        let n = batch.messages.len();
        if let Err(failure) = self.prepare() {
            return vec![self.outcome(failure); n];
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
        let mut bound = Vec::with_capacity(n);
        for (index, msg) in batch.messages.iter().enumerate() {
            match self.bind(msg) {
                Ok((partition, values)) => bound.push(Bound { index, partition, values }),
                Err(err) => outcomes[index] = Some(err.into()),
            }
        }
        if batch.transaction_id.is_some() {
            // All or nothing: one LOGGED batch, or the first reject for all.
            let outcome = match outcomes.iter().flatten().next() {
                Some(rejected) => Outcome::reject(format!("transaction not written: {}", reason(rejected))),
                None => self.write(BatchType::Logged, &bound),
            };
            return vec![outcome; n];
        }
        if self.statement.conditional {
            // Lightweight transactions one at a time (a conditional batch must
            // stay within one partition).
            for b in &bound {
                outcomes[b.index] = Some(self.write(BatchType::Unlogged, std::slice::from_ref(b)));
            }
        } else {
            for chunk in chunks(group_by_partition(bound)) {
                let outcome = self.write(BatchType::Unlogged, &chunk);
                if chunk.len() > 1 && matches!(outcome, Outcome::Reject { .. }) {
                    // Find the message the server refuses: one at a time.
                    for b in &chunk {
                        outcomes[b.index] = Some(self.write(BatchType::Unlogged, std::slice::from_ref(b)));
                    }
                } else {
                    for b in &chunk {
                        outcomes[b.index] = Some(outcome.clone());
                    }
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("internal error: no outcome")))
            .collect()
    }
}

wharf_sdk::export_target!(Cassandra);

impl Cassandra {
    /// Connect if needed: the contact points in turn from `current`.
    fn connect(&mut self) -> Result<&mut Conn, Failure> {
        if self.conn.is_none() {
            let mut errors = Vec::new();
            for i in 0..self.contact_points.len() {
                let at = (self.current + i) % self.contact_points.len();
                let addr = &self.contact_points[at];
                let creds = self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                match Conn::open(addr, creds, self.timeout) {
                    Ok(conn) => {
                        self.current = at;
                        self.conn = Some(conn);
                        break;
                    }
                    Err(Failure::Io(e)) => errors.push(format!("{addr}: {e}")),
                    Err(Failure::Server(err)) => {
                        // Refused credentials (or the like): the next contact
                        // point would say the same.
                        self.current = at;
                        return Err(Failure::Server(err));
                    }
                }
            }
            if self.conn.is_none() {
                return Err(Failure::Io(std::io::Error::other(format!(
                    "no contact point reachable: {}",
                    errors.join("; ")
                ))));
            }
        }
        self.conn.as_mut().ok_or_else(|| Failure::Io(std::io::Error::other("no connection")))
    }

    /// One request on the connection; an I/O error drops it and moves the
    /// next connect on to the next contact point.
    fn request(&mut self, opcode: Opcode, body: &RequestBody) -> Result<ResponseBody, Failure> {
        let conn = self.connect()?;
        let result = conn.request(opcode, body);
        if let Err(Failure::Io(e)) = &result {
            log::warn(format!("cassandra {}: {e}; reconnecting", conn.addr));
            self.conn = None;
            self.current = (self.current + 1) % self.contact_points.len();
        }
        result
    }

    /// Fill the prepared-statement cache (and, for the JSON mapping, the
    /// partition key columns) if empty.
    fn prepare(&mut self) -> Result<(), Failure> {
        if self.prepared.is_none() {
            let body = RequestBody::Prepare(BodyReqPrepare::new(self.statement.cql.clone(), None));
            match self.request(Opcode::Prepare, &body)? {
                ResponseBody::Result(ResResultBody::Prepared(p)) => {
                    let pk_indexes =
                        p.metadata.pk_indexes.iter().filter_map(|&i| usize::try_from(i).ok()).collect();
                    self.prepared = Some(Prepared { id: p.id, specs: p.metadata.col_specs, pk_indexes });
                }
                _ => return Err(Failure::Io(std::io::Error::other("PREPARE did not return a prepared id"))),
            }
        }
        if self.json && self.partition_key.is_none() {
            self.partition_key = Some(self.fetch_partition_key()?);
        }
        Ok(())
    }

    /// The table's partition key columns from `system_schema.columns`.
    fn fetch_partition_key(&mut self) -> Result<Vec<String>, Failure> {
        let cql = "SELECT column_name, kind, position FROM system_schema.columns \
                   WHERE keyspace_name = ? AND table_name = ?";
        let values =
            vec![Value::Some(self.keyspace.as_bytes().to_vec()), Value::Some(self.table.as_bytes().to_vec())];
        let params = QueryParams {
            consistency: Consistency::One,
            values: Some(QueryValues::SimpleValues(values)),
            ..Default::default()
        };
        let body = RequestBody::Query(BodyReqQuery { query: cql.to_string(), query_params: params });
        let ResponseBody::Result(ResResultBody::Rows(rows)) = self.request(Opcode::Query, &body)? else {
            return Err(Failure::Io(std::io::Error::other("system_schema.columns: no rows result")));
        };
        let col = |name: &str| rows.metadata.col_specs.iter().position(|c| c.name == name);
        let (Some(name_i), Some(kind_i), Some(pos_i)) = (col("column_name"), col("kind"), col("position"))
        else {
            return Err(Failure::Io(std::io::Error::other("system_schema.columns: unexpected columns")));
        };
        let mut key: Vec<(i32, String)> = Vec::new();
        for row in &rows.rows_content {
            let text = |i: usize| {
                row.get(i).and_then(|c| c.as_slice()).map(|b| String::from_utf8_lossy(b).to_string())
            };
            if text(kind_i).as_deref() == Some("partition_key") {
                let pos = row
                    .get(pos_i)
                    .and_then(|c| c.as_slice())
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(0, i32::from_be_bytes);
                key.push((pos, text(name_i).unwrap_or_default()));
            }
        }
        key.sort();
        Ok(key.into_iter().map(|(_, name)| name).collect())
    }

    /// A message's partition key (bytes to group by) and bind values.
    fn bind(&self, msg: &Message) -> Result<(Vec<u8>, Vec<Value>), Error> {
        let prepared = self.prepared.as_ref().ok_or_else(|| Error::retry("statement not prepared"))?;
        let values = mapping::bind(&self.statement, &prepared.specs, msg)?;
        let mut partition = Vec::new();
        if self.json {
            let row = mapping::payload_object(msg)?;
            for column in self.partition_key.iter().flatten() {
                let v = row.get(column).filter(|v| !v.is_null()).ok_or_else(|| {
                    Error::reject(format!(
                        "payload has no partition key column `{column}` of {}.{}",
                        self.keyspace, self.table
                    ))
                })?;
                partition.extend_from_slice(v.to_string().as_bytes());
                partition.push(0);
            }
        } else {
            for &i in &prepared.pk_indexes {
                if let Some(Value::Some(bytes)) = values.get(i) {
                    partition.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    partition.extend_from_slice(bytes);
                }
            }
        }
        Ok((partition, values))
    }

    /// Write `stmts` (EXECUTE for one, else a BATCH of `kind`); one outcome
    /// for all of them. Re-prepares once on UNPREPARED.
    fn write(&mut self, kind: BatchType, stmts: &[Bound]) -> Outcome {
        if stmts.is_empty() {
            return Outcome::Delivered;
        }
        for _ in 0..2 {
            if let Err(failure) = self.prepare() {
                return self.outcome(failure);
            }
            let Some(prepared) = self.prepared.clone() else { break };
            let serial = self.statement.conditional.then_some(self.serial_consistency);
            let (opcode, body) = if stmts.len() == 1 {
                let params = QueryParams {
                    consistency: self.consistency,
                    values: Some(QueryValues::SimpleValues(stmts[0].values.clone())),
                    serial_consistency: serial,
                    ..Default::default()
                };
                (Opcode::Execute, RequestBody::Execute(BodyReqExecuteOwned::new(prepared.id, None, params)))
            } else {
                let queries = stmts
                    .iter()
                    .map(|b| {
                        BatchQuery::new(
                            BatchQuerySubj::PreparedId(prepared.id.clone()),
                            QueryValues::SimpleValues(b.values.clone()),
                        )
                    })
                    .collect();
                let body = BodyReqBatch::new(kind, queries, self.consistency, serial, None, None, None);
                (Opcode::Batch, RequestBody::Batch(body))
            };
            match self.request(opcode, &body) {
                Ok(_) => return Outcome::Delivered,
                Err(Failure::Server(err)) if is_unprepared(&err.ty) => {
                    log::info("cassandra: statement unprepared on the server; preparing it again");
                    self.prepared = None;
                }
                Err(failure) => return self.outcome(failure),
            }
        }
        Outcome::retry("cassandra: the statement was unprepared twice in a row")
    }

    /// A server's message without the configured username and password
    /// (Cassandra echoes the username when it refuses a login).
    fn scrub(&self, message: &str) -> String {
        let Some((user, password)) = &self.credentials else { return message.to_string() };
        [password, user]
            .iter()
            .filter(|s| !s.is_empty())
            .fold(message.to_string(), |m, s| m.replace(s.as_str(), "***"))
    }

    fn outcome(&self, failure: Failure) -> Outcome {
        let addr = self.conn.as_ref().map_or(self.contact_points[self.current].as_str(), |c| c.addr.as_str());
        match failure {
            Failure::Io(e) => Outcome::retry(format!("cassandra: {e}")),
            Failure::Server(err) => {
                let (name, code) = conn::error_name(&err.ty);
                let reason = format!("cassandra {addr}: {name} (0x{code:04X}): {}", self.scrub(&err.message));
                if conn::is_transient(&err.ty) { Outcome::retry(reason) } else { Outcome::reject(reason) }
            }
        }
    }
}

fn is_unprepared(ty: &ErrorType) -> bool {
    matches!(ty, ErrorType::Unprepared(_))
}

fn reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Delivered => "delivered".to_string(),
        other => other.reason().unwrap_or_default().to_string(),
    }
}

/// Statements grouped by partition key: groups in order of first
/// appearance, each in batch order.
fn group_by_partition(bound: Vec<Bound>) -> Vec<Vec<Bound>> {
    let mut groups: Vec<Vec<Bound>> = Vec::new();
    for b in bound {
        match groups.iter_mut().find(|g| g[0].partition == b.partition) {
            Some(g) => g.push(b),
            None => groups.push(vec![b]),
        }
    }
    groups
}

/// Split groups so no batch exceeds the statement or byte limits.
fn chunks(groups: Vec<Vec<Bound>>) -> Vec<Vec<Bound>> {
    let mut out = Vec::new();
    for group in groups {
        let mut chunk: Vec<Bound> = Vec::new();
        let mut bytes = 0;
        for b in group {
            let size: usize = b.values.iter().map(|v| if let Value::Some(x) = v { x.len() } else { 0 }).sum();
            if !chunk.is_empty() && (chunk.len() >= MAX_BATCH_STATEMENTS || bytes + size > MAX_BATCH_BYTES) {
                out.push(std::mem::take(&mut chunk));
                bytes = 0;
            }
            bytes += size;
            chunk.push(b);
        }
        if !chunk.is_empty() {
            out.push(chunk);
        }
    }
    out
}

fn identifier(config: &Config, key: &str) -> Result<String, Error> {
    let value = config.require(key)?.trim().to_string();
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(Error::reject(format!(
            "config key `{key}`: {value:?} is not a plain CQL identifier (letters, digits, _)"
        )));
    }
    Ok(value)
}

fn consistency(config: &Config, key: &str, default: &str) -> Result<Consistency, Error> {
    let raw = config.get_or(key, default);
    let norm: String = raw.chars().filter(|&c| c != '_').collect::<String>().to_ascii_lowercase();
    let all = [
        ("any", Consistency::Any),
        ("one", Consistency::One),
        ("two", Consistency::Two),
        ("three", Consistency::Three),
        ("quorum", Consistency::Quorum),
        ("all", Consistency::All),
        ("localquorum", Consistency::LocalQuorum),
        ("eachquorum", Consistency::EachQuorum),
        ("serial", Consistency::Serial),
        ("localserial", Consistency::LocalSerial),
        ("localone", Consistency::LocalOne),
    ];
    all.iter().find(|(name, _)| *name == norm).map(|(_, c)| *c).ok_or_else(|| {
        Error::reject(format!(
            "config key `{key}`: {raw:?} is not a consistency level (ONE, QUORUM, LOCAL_QUORUM, ALL, LOCAL_ONE, ...)"
        ))
    })
}

#[cfg(test)]
mod tests;
