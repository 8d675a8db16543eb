//! One CQL native protocol v4 connection over a blocking `TcpStream`
//! (wasi:sockets on wasm32-wasip2). Frames are encoded and decoded by the
//! `cassandra-protocol` crate; this module only does the I/O and the
//! handshake: OPTIONS, STARTUP, then AUTHENTICATE with PasswordAuthenticator
//! (SASL PLAIN) when the server asks for it.
//!
//! Requests go one at a time (stream id 0): the plugin waits for each reply.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cassandra_protocol::compression::Compression;
use cassandra_protocol::frame::message_error::{ErrorBody, ErrorType};
use cassandra_protocol::frame::message_request::RequestBody;
use cassandra_protocol::frame::message_response::ResponseBody;
use cassandra_protocol::frame::message_startup::BodyReqStartup;
use cassandra_protocol::frame::{Direction, Envelope, Flags, Opcode, Serialize, Version};
use cassandra_protocol::types::CBytes;

/// Largest response body accepted.
const MAX_BODY: usize = 256 << 20;
const HEADER: usize = 9;

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// The connection broke or could not be made: try again (elsewhere).
    Io(io::Error),
    /// The server answered with an error.
    Server(ErrorBody),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

#[derive(Debug)]
pub struct Conn {
    pub addr: String,
    stream: TcpStream,
}

impl Conn {
    /// Connect and run the handshake.
    pub fn open(addr: &str, credentials: Option<(&str, &str)>, timeout: Duration) -> Result<Conn, Failure> {
        let sa: SocketAddr =
            addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        // As in the memcached plugin: on wasm32-wasip2 `connect_timeout` can
        // report success for a refused connection, so connect plainly there.
        #[cfg(target_arch = "wasm32")]
        let stream = TcpStream::connect(sa)?;
        #[cfg(not(target_arch = "wasm32"))]
        let stream = TcpStream::connect_timeout(&sa, timeout)?;
        // Unsupported socket options are ignored; the host's deadline bounds a call.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let mut conn = Conn { addr: addr.to_string(), stream };
        match conn.request(Opcode::Options, &RequestBody::Options(Default::default()))? {
            ResponseBody::Supported(_) => {}
            other => return Err(unexpected("OPTIONS", &other)),
        }
        let startup = BodyReqStartup::new(None, Version::V4);
        match conn.request(Opcode::Startup, &RequestBody::Startup(startup))? {
            ResponseBody::Ready => Ok(conn),
            ResponseBody::Authenticate(auth) => {
                let Some((user, pass)) = credentials else {
                    return Err(Failure::Server(ErrorBody {
                        message: format!(
                            "the server requires authentication ({}); set `username` and `password`",
                            auth.data
                        ),
                        ty: ErrorType::Authentication,
                    }));
                };
                // SASL PLAIN: authzid NUL authcid NUL password.
                let token = [b"\0", user.as_bytes(), b"\0", pass.as_bytes()].concat();
                let body = RequestBody::AuthResponse(
                    cassandra_protocol::frame::message_auth_response::BodyReqAuthResponse::new(CBytes::new(
                        token,
                    )),
                );
                match conn.request(Opcode::AuthResponse, &body)? {
                    ResponseBody::AuthSuccess(_) => Ok(conn),
                    other => Err(unexpected("AUTH_RESPONSE", &other)),
                }
            }
            other => Err(unexpected("STARTUP", &other)),
        }
    }

    /// Send one request and read its response. A server ERROR is
    /// `Failure::Server`; the connection stays usable after it.
    pub fn request(&mut self, opcode: Opcode, body: &RequestBody) -> Result<ResponseBody, Failure> {
        let envelope = Envelope::new(
            Version::V4,
            Direction::Request,
            Flags::empty(),
            opcode,
            0,
            body.serialize_to_vec(Version::V4),
            None,
            vec![],
        );
        let bytes = envelope.encode_with(Compression::None).map_err(|e| io::Error::other(e.to_string()))?;
        self.stream.write_all(&bytes)?;
        self.stream.flush()?;
        loop {
            let reply = self.read_envelope()?;
            if reply.stream_id != 0 {
                continue; // an EVENT (stream -1): we never REGISTER, but skip them
            }
            let body = reply.response_body().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("undecodable response: {e}"))
            })?;
            return match body {
                ResponseBody::Error(err) => Err(Failure::Server(err)),
                other => Ok(other),
            };
        }
    }

    fn read_envelope(&mut self) -> io::Result<Envelope> {
        let mut buf = vec![0u8; HEADER];
        self.stream.read_exact(&mut buf).map_err(eof)?;
        let len = i32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_BODY)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame length {len}")))?;
        buf.resize(HEADER + len, 0);
        self.stream.read_exact(&mut buf[HEADER..]).map_err(eof)?;
        let parsed = Envelope::from_buffer(&buf, Compression::None)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {e}")))?;
        Ok(parsed.envelope)
    }
}

fn eof(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(e.kind(), "connection closed by the server"),
        io::ErrorKind::WouldBlock => {
            io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
        }
        _ => e,
    }
}

fn unexpected(what: &str, body: &ResponseBody) -> Failure {
    let kind = match body {
        ResponseBody::Ready => "READY",
        ResponseBody::Authenticate(_) => "AUTHENTICATE",
        ResponseBody::Supported(_) => "SUPPORTED",
        ResponseBody::Result(_) => "RESULT",
        ResponseBody::Event(_) => "EVENT",
        ResponseBody::AuthChallenge(_) => "AUTH_CHALLENGE",
        ResponseBody::AuthSuccess(_) => "AUTH_SUCCESS",
        _ => "another response",
    };
    Failure::Io(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {kind} after {what}")))
}

/// The protocol's name and code for a server error: `Unavailable (0x1000)`.
pub fn error_name(ty: &ErrorType) -> (&'static str, u32) {
    match ty {
        ErrorType::Server => ("ServerError", 0x0000),
        ErrorType::Protocol => ("ProtocolError", 0x000A),
        ErrorType::Authentication => ("AuthenticationError", 0x0100),
        ErrorType::Unavailable(_) => ("Unavailable", 0x1000),
        ErrorType::Overloaded => ("Overloaded", 0x1001),
        ErrorType::IsBootstrapping => ("IsBootstrapping", 0x1002),
        ErrorType::Truncate => ("TruncateError", 0x1003),
        ErrorType::WriteTimeout(_) => ("WriteTimeout", 0x1100),
        ErrorType::ReadTimeout(_) => ("ReadTimeout", 0x1200),
        ErrorType::ReadFailure(_) => ("ReadFailure", 0x1300),
        ErrorType::FunctionFailure(_) => ("FunctionFailure", 0x1400),
        ErrorType::WriteFailure(_) => ("WriteFailure", 0x1500),
        ErrorType::Syntax => ("SyntaxError", 0x2000),
        ErrorType::Unauthorized => ("Unauthorized", 0x2100),
        ErrorType::Invalid => ("Invalid", 0x2200),
        ErrorType::Config => ("ConfigError", 0x2300),
        ErrorType::AlreadyExists(_) => ("AlreadyExists", 0x2400),
        ErrorType::Unprepared(_) => ("Unprepared", 0x2500),
        _ => ("Unknown", 0xFFFF),
    }
}

/// Whether trying the same write again later can succeed.
pub fn is_transient(ty: &ErrorType) -> bool {
    matches!(
        ty,
        ErrorType::Server
            | ErrorType::Protocol
            | ErrorType::Authentication
            | ErrorType::Unavailable(_)
            | ErrorType::Overloaded
            | ErrorType::IsBootstrapping
            | ErrorType::Truncate
            | ErrorType::WriteTimeout(_)
            | ErrorType::ReadTimeout(_)
            | ErrorType::ReadFailure(_)
            | ErrorType::WriteFailure(_)
            | ErrorType::Unprepared(_)
    )
}
