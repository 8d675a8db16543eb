//! A FAKE Cassandra: an in-process CQL native protocol v4 server for the
//! Cassandra plugin's tests. It is not Apache Cassandra and does not try to
//! be one; no Cassandra or Scylla can be installed on the test machines.
//!
//! Frames are decoded and encoded by the `cassandra-protocol` crate (not by
//! code written here), so the plugin and this fake meet on an independent
//! implementation of the wire format. The fake implements just enough CQL:
//!
//! - OPTIONS → SUPPORTED; STARTUP → READY, or AUTHENTICATE
//!   (`PasswordAuthenticator`) when [`FakeCql::start_with_auth`] set
//!   credentials; AUTH_RESPONSE checks the SASL PLAIN token
//!   (`\0user\0password`) and answers AUTH_SUCCESS or an AuthenticationError.
//! - PREPARE of `INSERT INTO ks.t JSON ? [USING TIMESTAMP ?]` and
//!   `INSERT INTO ks.t (a, b) VALUES (?, ?) [USING TIMESTAMP ?]` against the
//!   tables declared with [`FakeCql::create_table`]: a Prepared result with
//!   the markers' names and types and the partition key indexes. Anything
//!   else is a SyntaxError; an unknown table or column is Invalid.
//! - EXECUTE and BATCH of prepared ids: rows are decoded by column type and
//!   kept in memory (`INSERT JSON` sets the columns it leaves out to null,
//!   as Cassandra's `DEFAULT NULL` does): every write in arrival order
//!   ([`FakeCql::writes`]) and the table as last-write-wins by `USING
//!   TIMESTAMP` ([`FakeCql::rows`]). A BATCH is all or nothing. An unknown
//!   prepared id is answered UNPREPARED.
//! - QUERY of `system_schema.columns` (the partition key lookup).
//! - SELECT, as QUERY or PREPARE/EXECUTE: `SELECT (* | a, b) FROM ks.t
//!   [WHERE c = (? | 'text' | 123)]`, answered from the rows as
//!   [`FakeCql::rows`] shows them. `system.local` has one row (this node:
//!   cluster name, data center, rack, host id, versions, addresses) and
//!   `system.peers` none, which is what a driver's control connection reads;
//!   `system.peers_v2` does not exist (Invalid), so drivers fall back to
//!   `system.peers`. Enough for the DataStax Python driver to connect,
//!   prepare, insert and select (`tests/cql_driver_check.py`). Other queries
//!   are Invalid.
//!
//! Fault knobs: [`FakeCql::forget_prepared`] (a "restart": the next EXECUTE
//! gets UNPREPARED), [`FakeCql::fail_next_writes`] (Unavailable, Overloaded,
//! WriteTimeout, ... for the next N writes), [`FakeCql::drop_next_writes`]
//! (close the connection instead of answering), [`FakeCql::set_down`]
//! (close every connection and every new one at once).
//!
//! It listens on `127.0.0.1:0`; the port is known when `start` returns.
//! Dropping it stops the accept loop and shuts every connection down.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use base64::Engine as _;
use cassandra_protocol::compression::Compression;
use cassandra_protocol::consistency::Consistency;
use cassandra_protocol::frame::message_auth_success::BodyReqAuthSuccess;
use cassandra_protocol::frame::message_authenticate::BodyResAuthenticate;
use cassandra_protocol::frame::message_batch::{BatchQuerySubj, BatchType};
use cassandra_protocol::frame::message_error::{
    ErrorBody, ErrorType, UnavailableError, UnpreparedError, WriteTimeoutError, WriteType,
};
use cassandra_protocol::frame::message_request::RequestBody;
use cassandra_protocol::frame::message_result::{
    BodyResResultPrepared, BodyResResultRows, ColSpec, ColType, ColTypeOption, PreparedMetadata,
    ResResultBody, RowsMetadata, RowsMetadataFlags, TableSpec,
};
use cassandra_protocol::frame::message_supported::BodyResSupported;
use cassandra_protocol::frame::{
    CheckEnvelopeSizeError, Direction, Envelope, Flags, Opcode, Serialize, Version,
};
use cassandra_protocol::query::QueryValues;
use cassandra_protocol::types::value::Value;
use cassandra_protocol::types::{CBytes, CBytesShort};
use serde_json::{Map, Value as Json};

/// A server error the fake can be told to answer writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CqlFault {
    Unavailable,
    Overloaded,
    WriteTimeout,
    IsBootstrapping,
    Invalid,
    Unauthorized,
}

impl CqlFault {
    fn body(self) -> ErrorBody {
        let (message, ty) = match self {
            CqlFault::Unavailable => (
                "Cannot achieve consistency level LOCAL_QUORUM",
                ErrorType::Unavailable(UnavailableError {
                    cl: Consistency::LocalQuorum,
                    required: 2,
                    alive: 1,
                }),
            ),
            CqlFault::Overloaded => ("Server is in overloaded state", ErrorType::Overloaded),
            CqlFault::WriteTimeout => (
                "Operation timed out - received only 1 responses.",
                ErrorType::WriteTimeout(WriteTimeoutError {
                    cl: Consistency::LocalQuorum,
                    received: 1,
                    block_for: 2,
                    write_type: WriteType::Simple,
                    contentions: None,
                }),
            ),
            CqlFault::IsBootstrapping => {
                ("Cannot read from a bootstrapping node", ErrorType::IsBootstrapping)
            }
            CqlFault::Invalid => ("injected Invalid", ErrorType::Invalid),
            CqlFault::Unauthorized => ("User wharf has no MODIFY permission", ErrorType::Unauthorized),
        };
        ErrorBody { message: message.to_string(), ty }
    }
}

/// One write as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct CqlWrite {
    pub keyspace: String,
    pub table: String,
    /// The row, each column decoded by its CQL type to JSON (text → string,
    /// int/bigint/timestamp → number, uuid → string, blob → base64 string).
    pub row: Map<String, Json>,
    /// `USING TIMESTAMP` (micros), if the statement had one.
    pub timestamp: Option<i64>,
    /// The request's consistency level (`Consistency`'s Display, e.g. `LocalQuorum`).
    pub consistency: String,
    /// `EXECUTE`, `BATCH LOGGED`, `BATCH UNLOGGED` or `BATCH COUNTER`.
    pub via: String,
    /// Which write request (EXECUTE or BATCH) carried it, counting from 1.
    pub request: u64,
}

#[derive(Debug, Clone)]
struct Table {
    /// Columns and types, in declaration order.
    columns: Vec<(String, ColType)>,
    partition_key: Vec<String>,
    clustering: Vec<String>,
}

#[derive(Debug, Clone)]
enum Shape {
    Json,
    Columns(Vec<String>),
    Select(Select),
}

/// `SELECT <columns> FROM ks.t [WHERE <column> = <operand>]`.
#[derive(Debug, Clone)]
struct Select {
    columns: Vec<(String, ColType)>,
    filter: Option<(String, ColType, Operand)>,
}

#[derive(Debug, Clone)]
enum Operand {
    /// `?`, bound at EXECUTE (or QUERY) time.
    Marker,
    /// A string or integer literal.
    Literal(Json),
}

#[derive(Debug, Clone)]
struct Prepared {
    keyspace: String,
    table: String,
    shape: Shape,
    timestamp_marker: bool,
}

#[derive(Debug, Default)]
struct State {
    credentials: Option<(String, String)>,
    tables: BTreeMap<(String, String), Table>,
    prepared: HashMap<Vec<u8>, Prepared>,
    writes: Vec<CqlWrite>,
    write_requests: u64,
    fail: Vec<CqlFault>,
    drop_writes: u32,
    down: bool,
    connections: u64,
    auth_failures: u64,
    unprepared: u64,
    opcodes: BTreeMap<String, u64>,
}

/// The fake CQL server (see the module docs).
#[derive(Debug)]
pub struct FakeCql {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeCql {
    /// A fake that needs no authentication.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// A fake whose STARTUP asks for PasswordAuthenticator credentials.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    /// The tests' usual table, `app.users (id varchar PRIMARY KEY, name
    /// varchar, age int, msg varchar)`, on this fake.
    pub fn with_users_table(self) -> Self {
        self.create_table(
            "app",
            "users",
            &[
                ("id", ColType::Varchar),
                ("name", ColType::Varchar),
                ("age", ColType::Int),
                ("msg", ColType::Varchar),
            ],
            &["id"],
            &[],
        );
        self
    }

    fn start_inner(credentials: Option<(String, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake CQL server");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State { credentials, ..State::default() }));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, streams, stop) = (state.clone(), streams.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, state, streams, stop))
        };
        Self { addr, state, streams, stop, accept: Some(accept) }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Declare a table. `columns` are `(name, type)`; the first
    /// `partition_key` names are its partition key, `clustering` the rest of
    /// its primary key.
    pub fn create_table(
        &self,
        keyspace: &str,
        table: &str,
        columns: &[(&str, ColType)],
        partition_key: &[&str],
        clustering: &[&str],
    ) {
        let t = Table {
            columns: columns.iter().map(|(n, t)| ((*n).to_string(), *t)).collect(),
            partition_key: partition_key.iter().map(|s| (*s).to_string()).collect(),
            clustering: clustering.iter().map(|s| (*s).to_string()).collect(),
        };
        lock(&self.state).tables.insert((keyspace.to_string(), table.to_string()), t);
    }

    /// Every write received, in arrival order.
    pub fn writes(&self) -> Vec<CqlWrite> {
        lock(&self.state).writes.clone()
    }

    /// The table's rows as Cassandra would show them: one per primary key,
    /// each cell the value with the highest write timestamp (writes without
    /// `USING TIMESTAMP` count as their arrival order). Sorted by primary key.
    pub fn rows(&self, keyspace: &str, table: &str) -> Vec<Map<String, Json>> {
        table_rows(&lock(&self.state), keyspace, table)
    }

    /// Forget every prepared statement (as a restarted node does): the next
    /// EXECUTE or BATCH of an old id is answered UNPREPARED.
    pub fn forget_prepared(&self) {
        lock(&self.state).prepared.clear();
    }

    /// Answer the next `n` write requests (EXECUTE, BATCH) with `fault`,
    /// writing nothing.
    pub fn fail_next_writes(&self, n: usize, fault: CqlFault) {
        lock(&self.state).fail.extend(std::iter::repeat_n(fault, n));
    }

    /// Close the connection on the next `n` write requests instead of
    /// answering (writing nothing).
    pub fn drop_next_writes(&self, n: u32) {
        lock(&self.state).drop_writes = n;
    }

    /// Down: every open connection is shut, and new ones are closed as soon
    /// as they are accepted. Up again: business as usual.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
        if down {
            for s in lock(&self.streams).drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Connections accepted so far (including those closed while down).
    pub fn connections(&self) -> u64 {
        lock(&self.state).connections
    }

    /// Requests received with this opcode (`"PREPARE"`, `"EXECUTE"`, ...).
    pub fn requests(&self, opcode: &str) -> u64 {
        lock(&self.state).opcodes.get(opcode).copied().unwrap_or(0)
    }

    /// UNPREPARED answers sent.
    pub fn unprepared_answers(&self) -> u64 {
        lock(&self.state).unprepared
    }

    /// Injected faults not yet answered.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state).fail.len()
    }

    /// AUTH_RESPONSEs refused.
    pub fn auth_failures(&self) -> u64 {
        lock(&self.state).auth_failures
    }
}

impl Drop for FakeCql {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop up.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in lock(&self.streams).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let down = {
            let mut st = lock(&state);
            st.connections += 1;
            st.down
        };
        if down {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        if let Ok(clone) = stream.try_clone() {
            lock(&streams).push(clone);
        }
        let state = state.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &state);
        });
    }
}

/// What to do after a request.
enum Reply {
    Answer(Opcode, Vec<u8>),
    Close,
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut authenticated = false;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One whole envelope (header + body) in `buf`.
        let len = loop {
            match Envelope::check_envelope_size(&buf) {
                Ok(len) => break len,
                Err(CheckEnvelopeSizeError::NotEnoughBytes) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let parsed = Envelope::from_buffer(&buf[..len], Compression::None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        buf.drain(..len);
        let request = parsed.envelope;
        let reply = match request.request_body() {
            Ok(body) => handle(state, &mut authenticated, request.opcode, body),
            Err(e) => error(ErrorType::Protocol, format!("cannot decode the request: {e}")),
        };
        match reply {
            Reply::Close => {
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            Reply::Answer(opcode, body) => {
                let envelope = Envelope::new(
                    Version::V4,
                    Direction::Response,
                    Flags::empty(),
                    opcode,
                    request.stream_id,
                    body,
                    None,
                    vec![],
                );
                let bytes =
                    envelope.encode_with(Compression::None).map_err(|e| io::Error::other(e.to_string()))?;
                stream.write_all(&bytes)?;
            }
        }
    }
}

fn error(ty: ErrorType, message: impl Into<String>) -> Reply {
    Reply::Answer(Opcode::Error, ErrorBody { message: message.into(), ty }.serialize_to_vec(Version::V4))
}

fn result(body: ResResultBody) -> Reply {
    Reply::Answer(Opcode::Result, body.serialize_to_vec(Version::V4))
}

fn opcode_name(op: Opcode) -> &'static str {
    match op {
        Opcode::Startup => "STARTUP",
        Opcode::Options => "OPTIONS",
        Opcode::Query => "QUERY",
        Opcode::Prepare => "PREPARE",
        Opcode::Execute => "EXECUTE",
        Opcode::Register => "REGISTER",
        Opcode::Batch => "BATCH",
        Opcode::AuthResponse => "AUTH_RESPONSE",
        _ => "OTHER",
    }
}

fn handle(state: &Mutex<State>, authenticated: &mut bool, opcode: Opcode, body: RequestBody) -> Reply {
    let mut st = lock(state);
    *st.opcodes.entry(opcode_name(opcode).to_string()).or_default() += 1;
    match body {
        RequestBody::Options(_) => {
            let mut data = HashMap::new();
            data.insert("CQL_VERSION".to_string(), vec!["3.4.5".to_string()]);
            data.insert("COMPRESSION".to_string(), vec![]);
            data.insert("PROTOCOL_VERSIONS".to_string(), vec!["4/v4".to_string()]);
            Reply::Answer(Opcode::Supported, BodyResSupported { data }.serialize_to_vec(Version::V4))
        }
        RequestBody::Startup(_) => {
            if st.credentials.is_some() {
                let auth = BodyResAuthenticate {
                    data: "org.apache.cassandra.auth.PasswordAuthenticator".to_string(),
                };
                Reply::Answer(Opcode::Authenticate, auth.serialize_to_vec(Version::V4))
            } else {
                *authenticated = true;
                Reply::Answer(Opcode::Ready, Vec::new())
            }
        }
        RequestBody::AuthResponse(auth) => {
            let token = auth.data.as_slice().unwrap_or_default();
            let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
            let ok = match (&st.credentials, parts.as_slice()) {
                (Some((user, pass)), [_authzid, u, p]) => *u == user.as_bytes() && *p == pass.as_bytes(),
                _ => false,
            };
            if ok {
                *authenticated = true;
                let success = BodyReqAuthSuccess { data: CBytes::new_null() };
                Reply::Answer(Opcode::AuthSuccess, success.serialize_to_vec(Version::V4))
            } else {
                st.auth_failures += 1;
                let user = parts.get(1).map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default();
                error(
                    ErrorType::Authentication,
                    format!("Provided username {user} and/or password are incorrect"),
                )
            }
        }
        _ if !*authenticated => error(ErrorType::Protocol, "Unexpected message, the connection is not ready"),
        RequestBody::Register(_) => Reply::Answer(Opcode::Ready, Vec::new()),
        RequestBody::Prepare(p) => match prepare(&st, &p.query) {
            Ok((id, prepared, specs, pk_indexes)) => {
                let body = BodyResResultPrepared {
                    id: CBytesShort::new(id.clone()),
                    result_metadata_id: None,
                    metadata: PreparedMetadata {
                        pk_indexes,
                        global_table_spec: Some(TableSpec {
                            ks_name: prepared.keyspace.clone(),
                            table_name: prepared.table.clone(),
                        }),
                        col_specs: specs,
                    },
                    result_metadata: match &prepared.shape {
                        Shape::Select(sel) => {
                            rows_metadata(&prepared.keyspace, &prepared.table, &sel.columns)
                        }
                        _ => RowsMetadata {
                            flags: RowsMetadataFlags::NO_METADATA,
                            columns_count: 0,
                            paging_state: None,
                            new_metadata_id: None,
                            global_table_spec: None,
                            col_specs: vec![],
                        },
                    },
                };
                st.prepared.insert(id, prepared);
                result(ResResultBody::Prepared(body))
            }
            Err(reply) => reply,
        },
        RequestBody::Query(q) => query(&st, &q.query, q.query_params.values.as_ref()),
        RequestBody::Execute(e) => {
            let values = match e.query_parameters.values {
                Some(QueryValues::SimpleValues(v)) => v,
                Some(QueryValues::NamedValues(_)) => {
                    return error(ErrorType::Invalid, "the fake does not support named values");
                }
                None => vec![],
            };
            let consistency = e.query_parameters.consistency;
            let id = e.id.into_bytes().unwrap_or_default();
            if let Some(Prepared { keyspace, table, shape: Shape::Select(sel), .. }) = st.prepared.get(&id) {
                return run_select(&st, keyspace, table, sel, &values);
            }
            write(&mut st, "EXECUTE", consistency, vec![(id, values)])
        }
        RequestBody::Batch(b) => {
            let via = match b.batch_type {
                BatchType::Logged => "BATCH LOGGED",
                BatchType::Unlogged => "BATCH UNLOGGED",
                BatchType::Counter => "BATCH COUNTER",
                _ => "BATCH",
            };
            let mut stmts = Vec::new();
            for q in b.queries {
                let BatchQuerySubj::PreparedId(id) = q.subject else {
                    return error(ErrorType::Invalid, "the fake only batches prepared statements");
                };
                let QueryValues::SimpleValues(values) = q.values else {
                    return error(ErrorType::Invalid, "named values in a batch");
                };
                stmts.push((id.into_bytes().unwrap_or_default(), values));
            }
            write(&mut st, via, b.consistency, stmts)
        }
        _ => error(ErrorType::Protocol, "unexpected request"),
    }
}

/// Write statements (one EXECUTE, or a whole BATCH: all or nothing).
fn write(st: &mut State, via: &str, consistency: Consistency, stmts: Vec<(Vec<u8>, Vec<Value>)>) -> Reply {
    if st.drop_writes > 0 {
        st.drop_writes -= 1;
        return Reply::Close;
    }
    if !st.fail.is_empty() {
        let fault = st.fail.remove(0);
        let body = fault.body();
        return Reply::Answer(Opcode::Error, body.serialize_to_vec(Version::V4));
    }
    let request = st.write_requests + 1;
    let mut rows = Vec::new();
    for (id, values) in stmts {
        let Some(p) = st.prepared.get(&id).cloned() else {
            st.unprepared += 1;
            let body = ErrorBody {
                message: format!("Prepared query with ID {} not found", hex(&id)),
                ty: ErrorType::Unprepared(UnpreparedError { id: CBytesShort::new(id) }),
            };
            return Reply::Answer(Opcode::Error, body.serialize_to_vec(Version::V4));
        };
        match decode_row(st, &p, &values) {
            Ok((row, timestamp)) => rows.push(CqlWrite {
                keyspace: p.keyspace.clone(),
                table: p.table.clone(),
                row,
                timestamp,
                consistency: consistency.to_string(),
                via: via.to_string(),
                request,
            }),
            Err(message) => return error(ErrorType::Invalid, message),
        }
    }
    st.write_requests = request;
    st.writes.extend(rows);
    result(ResResultBody::Void)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

type PrepareOk = (Vec<u8>, Prepared, Vec<ColSpec>, Vec<i16>);

/// Parse `INSERT INTO ks.t JSON ? [USING TIMESTAMP ?]` or
/// `INSERT INTO ks.t (cols) VALUES (?, ...) [USING TIMESTAMP ?]`.
fn prepare(st: &State, cql: &str) -> Result<PrepareOk, Reply> {
    let syntax =
        |near: &str| error(ErrorType::Syntax, format!("line 1:0 no viable alternative at input '{near}'"));
    let toks = tokens(cql);
    if toks.first().is_some_and(|w| w.eq_ignore_ascii_case("SELECT")) {
        let (keyspace, table, sel) = parse_select(st, cql)?;
        let specs: Vec<ColSpec> = sel
            .filter
            .iter()
            .filter(|(_, _, op)| matches!(op, Operand::Marker))
            .map(|(c, ty, _)| col_spec(c, *ty))
            .collect();
        let pk_indexes = match (&sel.filter, system_or_user_table(st, &keyspace, &table)) {
            (Some((c, _, Operand::Marker)), Some(t)) if t.partition_key == [c.clone()] => vec![0],
            _ => vec![],
        };
        let prepared = Prepared { keyspace, table, shape: Shape::Select(sel), timestamp_marker: false };
        return Ok((statement_id(cql), prepared, specs, pk_indexes));
    }
    let mut t = toks.iter().map(String::as_str).peekable();
    for word in ["INSERT", "INTO"] {
        match t.next() {
            Some(w) if w.eq_ignore_ascii_case(word) => {}
            other => return Err(syntax(other.unwrap_or("<EOF>"))),
        }
    }
    let ident = |w: Option<&str>| -> Result<String, Reply> {
        match w {
            Some(w) if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(w.to_ascii_lowercase()),
            other => Err(syntax(other.unwrap_or("<EOF>"))),
        }
    };
    let keyspace = ident(t.next())?;
    if t.next() != Some(".") {
        return Err(error(ErrorType::Invalid, "No keyspace has been specified."));
    }
    let table = ident(t.next())?;
    let Some(schema) = st.tables.get(&(keyspace.clone(), table.clone())) else {
        return Err(error(ErrorType::Invalid, format!("unconfigured table {table}")));
    };
    let col_type = |name: &str| schema.columns.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
    let spec = |name: &str, id: ColType| ColSpec {
        table_spec: None,
        name: name.to_string(),
        col_type: ColTypeOption { id, value: None },
    };
    let mut specs = Vec::new();
    let mut pk_indexes = Vec::new();
    let shape = match t.next() {
        Some(w) if w.eq_ignore_ascii_case("JSON") => {
            if t.next() != Some("?") {
                return Err(syntax("JSON"));
            }
            specs.push(spec("[json]", ColType::Varchar));
            Shape::Json
        }
        Some("(") => {
            let mut cols = Vec::new();
            loop {
                let c = ident(t.next())?;
                if col_type(&c).is_none() {
                    return Err(error(ErrorType::Invalid, format!("Undefined column name {c}")));
                }
                cols.push(c);
                match t.next() {
                    Some(",") => {}
                    Some(")") => break,
                    other => return Err(syntax(other.unwrap_or("<EOF>"))),
                }
            }
            if !t.next().is_some_and(|w| w.eq_ignore_ascii_case("VALUES")) || t.next() != Some("(") {
                return Err(syntax("VALUES"));
            }
            for (i, c) in cols.iter().enumerate() {
                if t.next() != Some("?") {
                    return Err(error(ErrorType::Invalid, "the fake only takes ? markers in VALUES"));
                }
                let sep = if i + 1 == cols.len() { ")" } else { "," };
                if t.next() != Some(sep) {
                    return Err(error(ErrorType::Invalid, "Unmatched column names/values"));
                }
                specs.push(spec(c, col_type(c).unwrap_or(ColType::Blob)));
            }
            for k in &schema.partition_key {
                match cols.iter().position(|c| c == k) {
                    Some(i) => pk_indexes.push(i as i16),
                    None => {
                        return Err(error(
                            ErrorType::Invalid,
                            format!("Some partition key parts are missing: {k}"),
                        ));
                    }
                }
            }
            Shape::Columns(cols)
        }
        other => return Err(syntax(other.unwrap_or("<EOF>"))),
    };
    let mut timestamp_marker = false;
    match t.next() {
        None | Some(";") => {}
        Some(w) if w.eq_ignore_ascii_case("USING") => {
            if !t.next().is_some_and(|w| w.eq_ignore_ascii_case("TIMESTAMP")) || t.next() != Some("?") {
                return Err(error(ErrorType::Invalid, "the fake only takes USING TIMESTAMP ?"));
            }
            timestamp_marker = true;
            specs.push(spec("[timestamp]", ColType::Bigint));
            if let Some(w) = t.next().filter(|w| *w != ";") {
                return Err(syntax(w));
            }
        }
        Some(w) => return Err(syntax(w)),
    }
    Ok((statement_id(cql), Prepared { keyspace, table, shape, timestamp_marker }, specs, pk_indexes))
}

/// A prepared statement's id: 16 bytes hashed from its text.
fn statement_id(cql: &str) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    for salt in [0u64, 1] {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, cql).hash(&mut h);
        id.extend_from_slice(&h.finish().to_be_bytes());
    }
    id
}

/// Words, `?`, punctuation and quoted strings (kept with their quotes).
fn tokens(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = cql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            let mut w = c.to_string();
            while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                w.push(n);
                chars.next();
            }
            out.push(w);
        } else if c == '\'' || c == '"' {
            let mut w = c.to_string();
            for n in chars.by_ref() {
                w.push(n);
                if n == c {
                    break;
                }
            }
            out.push(w);
        } else {
            out.push(c.to_string());
        }
    }
    out
}

/// A row (and its timestamp) from a prepared statement's bind values.
fn decode_row(
    st: &State,
    p: &Prepared,
    values: &[Value],
) -> Result<(Map<String, Json>, Option<i64>), String> {
    let schema = st.tables.get(&(p.keyspace.clone(), p.table.clone())).ok_or("unconfigured table")?;
    let markers = match &p.shape {
        Shape::Json => 1,
        Shape::Columns(c) => c.len(),
        Shape::Select(_) => return Err("a SELECT cannot be part of a write".to_string()),
    } + usize::from(p.timestamp_marker);
    if values.len() != markers {
        return Err(format!("There were {markers} markers(?) in CQL but {} bound variables", values.len()));
    }
    let bytes = |v: &Value| match v {
        Value::Some(b) => Some(b.clone()),
        Value::Null | Value::NotSet => None,
    };
    let mut row = Map::new();
    match &p.shape {
        Shape::Json => {
            let text = bytes(&values[0]).ok_or("Got null for INSERT JSON values")?;
            let obj: Map<String, Json> = serde_json::from_slice(&text)
                .map_err(|e| format!("Could not decode JSON string as a map: {e}"))?;
            for (col, v) in obj {
                let col = col.to_ascii_lowercase();
                let (_, ty) = schema
                    .columns
                    .iter()
                    .find(|(n, _)| *n == col)
                    .ok_or_else(|| format!("JSON values map contains unrecognized column: {col}"))?;
                check_json(&v, ty).map_err(|e| format!("Error decoding JSON value for {col}: {e}"))?;
                row.insert(col, v);
            }
            // INSERT JSON's default, DEFAULT NULL: columns left out are null.
            for (col, _) in &schema.columns {
                row.entry(col.clone()).or_insert(Json::Null);
            }
        }
        Shape::Select(_) => return Err("a SELECT cannot be part of a write".to_string()),
        Shape::Columns(cols) => {
            for (col, v) in cols.iter().zip(values) {
                let ty =
                    schema.columns.iter().find(|(n, _)| n == col).map(|(_, t)| t).ok_or("unknown column")?;
                let v = match bytes(v) {
                    None => Json::Null,
                    Some(b) => decode(&b, ty).map_err(|e| format!("Invalid value for {col}: {e}"))?,
                };
                row.insert(col.clone(), v);
            }
        }
    }
    for k in schema.partition_key.iter().chain(&schema.clustering) {
        if row.get(k).is_none_or(Json::is_null) {
            return Err(format!("Invalid null value in condition for column {k}"));
        }
    }
    let timestamp = if p.timestamp_marker {
        let b = bytes(&values[markers - 1]).ok_or("Invalid null value of timestamp")?;
        let b: [u8; 8] = b.try_into().map_err(|_| "Expected 8 bytes for a bigint timestamp".to_string())?;
        Some(i64::from_be_bytes(b))
    } else {
        None
    };
    Ok((row, timestamp))
}

/// Whether a JSON value fits a column of `ty` (as Cassandra's fromJson).
fn check_json(v: &Json, ty: &ColType) -> Result<(), String> {
    let ok = match ty {
        _ if v.is_null() => true,
        ColType::Varchar | ColType::Ascii | ColType::Uuid | ColType::Timeuuid | ColType::Inet => {
            v.is_string()
        }
        ColType::Int
        | ColType::Bigint
        | ColType::Smallint
        | ColType::Tinyint
        | ColType::Varint
        | ColType::Counter => v.is_i64() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
        ColType::Timestamp => v.is_i64() || v.is_string(),
        ColType::Double | ColType::Float | ColType::Decimal => v.is_number() || v.is_string(),
        ColType::Boolean => v.is_boolean() || v.as_str().is_some_and(|s| s == "true" || s == "false"),
        _ => true,
    };
    if ok { Ok(()) } else { Err(format!("{v} is not a valid {ty:?}")) }
}

/// A serialised CQL value as JSON.
fn decode(b: &[u8], ty: &ColType) -> Result<Json, String> {
    let fixed = |n: usize| -> Result<&[u8], String> {
        if b.len() == n { Ok(b) } else { Err(format!("expected {n} bytes, got {}", b.len())) }
    };
    Ok(match ty {
        ColType::Varchar | ColType::Ascii => {
            Json::String(String::from_utf8(b.to_vec()).map_err(|e| format!("invalid UTF-8: {e}"))?)
        }
        ColType::Int => Json::from(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| "int")?)),
        ColType::Smallint => Json::from(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| "smallint")?)),
        ColType::Tinyint => Json::from(fixed(1)?[0] as i8),
        ColType::Bigint | ColType::Timestamp | ColType::Counter => {
            Json::from(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| "bigint")?))
        }
        ColType::Boolean => Json::from(fixed(1)?[0] != 0),
        ColType::Double => Json::from(f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| "double")?)),
        ColType::Float => Json::from(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| "float")?)),
        ColType::Uuid | ColType::Timeuuid => {
            let h = hex(fixed(16)?);
            Json::String(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
        }
        _ => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
    })
}

/// QUERY: only `system_schema.columns` for one table.
fn query(st: &State, cql: &str, values: Option<&QueryValues>) -> Reply {
    let lower = cql.to_ascii_lowercase();
    if !lower.contains("from system_schema.columns") {
        if !lower.trim_start().starts_with("select") {
            return error(ErrorType::Invalid, format!("the fake CQL server does not run {cql:?}"));
        }
        let (ks, table, sel) = match parse_select(st, cql) {
            Ok(parsed) => parsed,
            Err(reply) => return reply,
        };
        let bound = match values {
            Some(QueryValues::SimpleValues(v)) => v.clone(),
            Some(QueryValues::NamedValues(_)) => {
                return error(ErrorType::Invalid, "the fake does not support named values");
            }
            None => vec![],
        };
        return run_select(st, &ks, &table, &sel, &bound);
    }
    let text = |v: &Value| match v {
        Value::Some(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let (ks, table) = match values {
        Some(QueryValues::SimpleValues(v)) if v.len() == 2 => (text(&v[0]), text(&v[1])),
        _ => return error(ErrorType::Invalid, "the fake wants keyspace_name = ? AND table_name = ? bound"),
    };
    let mut rows_content = Vec::new();
    if let Some(t) = st.tables.get(&(ks, table)) {
        for (name, _) in &t.columns {
            let (kind, position) = if let Some(i) = t.partition_key.iter().position(|k| k == name) {
                ("partition_key", i as i32)
            } else if let Some(i) = t.clustering.iter().position(|k| k == name) {
                ("clustering", i as i32)
            } else {
                ("regular", -1)
            };
            rows_content.push(vec![
                CBytes::new(name.as_bytes().to_vec()),
                CBytes::new(kind.as_bytes().to_vec()),
                CBytes::new(position.to_be_bytes().to_vec()),
            ]);
        }
    }
    let spec = |name: &str, id: ColType| ColSpec {
        table_spec: None,
        name: name.to_string(),
        col_type: ColTypeOption { id, value: None },
    };
    let body = BodyResResultRows {
        metadata: RowsMetadata {
            flags: RowsMetadataFlags::GLOBAL_TABLE_SPACE,
            columns_count: 3,
            paging_state: None,
            new_metadata_id: None,
            global_table_spec: Some(TableSpec {
                ks_name: "system_schema".to_string(),
                table_name: "columns".to_string(),
            }),
            col_specs: vec![
                spec("column_name", ColType::Varchar),
                spec("kind", ColType::Varchar),
                spec("position", ColType::Int),
            ],
        },
        rows_count: rows_content.len() as i32,
        rows_content,
        protocol_version: Version::V4,
    };
    result(ResResultBody::Rows(body))
}

fn col_spec(name: &str, id: ColType) -> ColSpec {
    ColSpec { table_spec: None, name: name.to_string(), col_type: ColTypeOption { id, value: None } }
}

fn rows_metadata(keyspace: &str, table: &str, columns: &[(String, ColType)]) -> RowsMetadata {
    RowsMetadata {
        flags: RowsMetadataFlags::GLOBAL_TABLE_SPACE,
        columns_count: columns.len() as i32,
        paging_state: None,
        new_metadata_id: None,
        global_table_spec: Some(TableSpec { ks_name: keyspace.to_string(), table_name: table.to_string() }),
        col_specs: columns.iter().map(|(n, t)| col_spec(n, *t)).collect(),
    }
}

/// The fake's one node, as `system.local` shows it: what a driver's control
/// connection reads (cluster name, data center, rack, host id, versions).
/// `system.peers` has no rows; `system.peers_v2` does not exist (Invalid), so
/// drivers fall back to `system.peers`, as with Cassandra 3.
fn system_table(keyspace: &str, table: &str) -> Option<(Table, Vec<Map<String, Json>>)> {
    use ColType::{Inet, Uuid, Varchar};
    let (columns, row): (Vec<(&str, ColType, Json)>, bool) = match (keyspace, table) {
        ("system", "local") => (
            vec![
                ("key", Varchar, Json::from("local")),
                ("cluster_name", Varchar, Json::from("Wharf fake CQL")),
                ("data_center", Varchar, Json::from("datacenter1")),
                ("rack", Varchar, Json::from("rack1")),
                ("host_id", Uuid, Json::from("00000000-0000-4000-8000-00000000fa4e")),
                ("partitioner", Varchar, Json::from("org.apache.cassandra.dht.Murmur3Partitioner")),
                ("release_version", Varchar, Json::from("4.0.0")),
                ("schema_version", Uuid, Json::from("00000000-0000-4000-8000-000000000001")),
                ("cql_version", Varchar, Json::from("3.4.5")),
                ("native_protocol_version", Varchar, Json::from("4")),
                ("rpc_address", Inet, Json::from("127.0.0.1")),
                ("broadcast_address", Inet, Json::from("127.0.0.1")),
                ("listen_address", Inet, Json::from("127.0.0.1")),
            ],
            true,
        ),
        ("system", "peers") => (
            vec![
                ("peer", Inet, Json::Null),
                ("data_center", Varchar, Json::Null),
                ("host_id", Uuid, Json::Null),
                ("preferred_ip", Inet, Json::Null),
                ("rack", Varchar, Json::Null),
                ("release_version", Varchar, Json::Null),
                ("rpc_address", Inet, Json::Null),
                ("schema_version", Uuid, Json::Null),
            ],
            false,
        ),
        _ => return None,
    };
    let key = columns[0].0.to_string();
    let rows = if row {
        vec![columns.iter().map(|(n, _, v)| ((*n).to_string(), v.clone())).collect()]
    } else {
        vec![]
    };
    let t = Table {
        columns: columns.into_iter().map(|(n, t, _)| (n.to_string(), t)).collect(),
        partition_key: vec![key],
        clustering: vec![],
    };
    Some((t, rows))
}

fn system_or_user_table(st: &State, keyspace: &str, table: &str) -> Option<Table> {
    system_table(keyspace, table)
        .map(|(t, _)| t)
        .or_else(|| st.tables.get(&(keyspace.to_string(), table.to_string())).cloned())
}

/// A table's rows, one per primary key, each cell the value with the highest
/// write timestamp (see [`FakeCql::rows`]).
fn table_rows(st: &State, keyspace: &str, table: &str) -> Vec<Map<String, Json>> {
    if let Some((_, rows)) = system_table(keyspace, table) {
        return rows;
    }
    let Some(t) = st.tables.get(&(keyspace.to_string(), table.to_string())) else {
        return Vec::new();
    };
    let key_cols: Vec<&String> = t.partition_key.iter().chain(&t.clustering).collect();
    let mut rows: BTreeMap<String, BTreeMap<String, (i64, Json)>> = BTreeMap::new();
    for (i, w) in st.writes.iter().enumerate().filter(|(_, w)| w.keyspace == keyspace && w.table == table) {
        let ts = w.timestamp.unwrap_or(i as i64);
        let pk: Vec<String> =
            key_cols.iter().map(|c| w.row.get(*c).map(Json::to_string).unwrap_or_default()).collect();
        let row = rows.entry(pk.join("\u{1}")).or_default();
        for (col, v) in &w.row {
            match row.get(col) {
                Some((old, _)) if *old > ts => {}
                _ => {
                    row.insert(col.clone(), (ts, v.clone()));
                }
            }
        }
    }
    rows.into_values().map(|r| r.into_iter().map(|(c, (_, v))| (c, v)).collect()).collect()
}

/// Parse `SELECT (* | a, b, ...) FROM ks.t [WHERE c = (? | 'text' | 123)] [;]`.
fn parse_select(st: &State, cql: &str) -> Result<(String, String, Select), Reply> {
    let syntax =
        |near: &str| error(ErrorType::Syntax, format!("line 1:0 no viable alternative at input '{near}'"));
    let toks = tokens(cql);
    let mut t = toks.iter().map(String::as_str).peekable();
    let ident = |w: Option<&str>| -> Result<String, Reply> {
        match w {
            Some(w) if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Ok(w.to_ascii_lowercase()),
            other => Err(syntax(other.unwrap_or("<EOF>"))),
        }
    };
    if !t.next().is_some_and(|w| w.eq_ignore_ascii_case("SELECT")) {
        return Err(syntax(cql));
    }
    let mut names = Vec::new();
    if t.peek() == Some(&"*") {
        t.next();
    } else {
        loop {
            names.push(ident(t.next())?);
            match t.next() {
                Some(",") => {}
                Some(w) if w.eq_ignore_ascii_case("FROM") => break,
                other => return Err(syntax(other.unwrap_or("<EOF>"))),
            }
        }
    }
    if names.is_empty() && !t.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
        return Err(syntax("FROM"));
    }
    let keyspace = ident(t.next())?;
    if t.next() != Some(".") {
        return Err(error(ErrorType::Invalid, "No keyspace has been specified."));
    }
    let table = ident(t.next())?;
    let Some(schema) = system_or_user_table(st, &keyspace, &table) else {
        return Err(error(ErrorType::Invalid, format!("unconfigured table {table}")));
    };
    let col_type = |name: &str| -> Result<ColType, Reply> {
        schema
            .columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| error(ErrorType::Invalid, format!("Undefined column name {name}")))
    };
    let columns = if names.is_empty() {
        schema.columns.clone()
    } else {
        names.iter().map(|n| Ok((n.clone(), col_type(n)?))).collect::<Result<Vec<_>, Reply>>()?
    };
    let mut filter = None;
    match t.next() {
        None | Some(";") => {}
        Some(w) if w.eq_ignore_ascii_case("WHERE") => {
            let c = ident(t.next())?;
            let ty = col_type(&c)?;
            if t.next() != Some("=") {
                return Err(error(ErrorType::Invalid, "the fake only takes WHERE <column> = <value>"));
            }
            let op = match t.next() {
                Some("?") => Operand::Marker,
                Some(w) if w.starts_with('\'') && w.ends_with('\'') && w.len() >= 2 => {
                    Operand::Literal(Json::from(&w[1..w.len() - 1]))
                }
                Some(w) if w.parse::<i64>().is_ok() => {
                    Operand::Literal(Json::from(w.parse::<i64>().unwrap_or(0)))
                }
                other => return Err(syntax(other.unwrap_or("<EOF>"))),
            };
            filter = Some((c, ty, op));
            if let Some(w) = t.next().filter(|w| *w != ";") {
                return Err(syntax(w));
            }
        }
        Some(w) => return Err(syntax(w)),
    }
    Ok((keyspace, table, Select { columns, filter }))
}

/// Answer a SELECT with the table's current rows (filtered, projected).
fn run_select(st: &State, keyspace: &str, table: &str, sel: &Select, values: &[Value]) -> Reply {
    let wanted = match &sel.filter {
        None => None,
        Some((c, _, Operand::Literal(v))) => Some((c, v.clone())),
        Some((c, ty, Operand::Marker)) => {
            let [v] = values else {
                return error(
                    ErrorType::Invalid,
                    format!("There was 1 marker(?) in CQL but {} bound variables", values.len()),
                );
            };
            let v = match v {
                Value::Some(b) => match decode(b, ty) {
                    Ok(v) => v,
                    Err(e) => return error(ErrorType::Invalid, format!("Invalid value for {c}: {e}")),
                },
                Value::Null | Value::NotSet => {
                    return error(ErrorType::Invalid, format!("Invalid null value for {c}"));
                }
            };
            Some((c, v))
        }
    };
    let mut rows_content = Vec::new();
    for row in table_rows(st, keyspace, table) {
        if let Some((c, v)) = &wanted
            && row.get(*c) != Some(v)
        {
            continue;
        }
        let mut cells = Vec::new();
        for (name, ty) in &sel.columns {
            match encode(row.get(name).unwrap_or(&Json::Null), ty) {
                Ok(cell) => cells.push(cell),
                Err(e) => return error(ErrorType::Server, format!("the fake cannot encode {name}: {e}")),
            }
        }
        rows_content.push(cells);
    }
    result(ResResultBody::Rows(BodyResResultRows {
        metadata: rows_metadata(keyspace, table, &sel.columns),
        rows_count: rows_content.len() as i32,
        rows_content,
        protocol_version: Version::V4,
    }))
}

/// A JSON value as a serialised CQL value of `ty` (the inverse of [`decode`]).
fn encode(v: &Json, ty: &ColType) -> Result<CBytes, String> {
    if v.is_null() {
        return Ok(CBytes::new_null());
    }
    let int = || -> Result<i64, String> {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("{v} is not an integer"))
    };
    let float = || -> Result<f64, String> {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("{v} is not a number"))
    };
    let text = || v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let bytes = match ty {
        ColType::Varchar | ColType::Ascii => text().into_bytes(),
        ColType::Int => (int()? as i32).to_be_bytes().to_vec(),
        ColType::Smallint => (int()? as i16).to_be_bytes().to_vec(),
        ColType::Tinyint => (int()? as i8).to_be_bytes().to_vec(),
        ColType::Bigint | ColType::Timestamp | ColType::Counter => int()?.to_be_bytes().to_vec(),
        ColType::Boolean => vec![u8::from(v.as_bool().unwrap_or_else(|| text() == "true"))],
        ColType::Double => float()?.to_be_bytes().to_vec(),
        ColType::Float => (float()? as f32).to_be_bytes().to_vec(),
        ColType::Uuid | ColType::Timeuuid => {
            let h: String = text().chars().filter(|c| *c != '-').collect();
            if h.len() != 32 {
                return Err(format!("{v} is not a uuid"));
            }
            (0..16)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?
        }
        ColType::Inet => match text().parse::<std::net::IpAddr>().map_err(|e| e.to_string())? {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        },
        _ => base64::engine::general_purpose::STANDARD.decode(text()).map_err(|e| e.to_string())?,
    };
    Ok(CBytes::new(bytes))
}
