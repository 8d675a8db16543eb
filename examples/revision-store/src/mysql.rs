//! The smallest MySQL-protocol client this example needs, over a blocking
//! `std::net::TcpStream` (which works on wasm32-wasip2 through
//! `wasi:sockets`): the HandshakeV10 greeting, `mysql_native_password`
//! authentication (also after an AuthSwitchRequest), `COM_QUERY`, and
//! OK / ERR / EOF packets and text result sets. No TLS, no compression, no
//! prepared statements: values go into statements through [`quote`], which
//! escapes them for the session's `NO_BACKSLASH_ESCAPES` mode.
//!
//! Why not a crate: `mysql` opens its sockets through `socket2` and pulls in
//! TLS and compression; `mysql_common` (its packet layer) does not build for
//! wasm32-wasip2 without its default features (its `flate2` then has no
//! backend) and would still leave the I/O loop to write. This is about 400 lines.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use sha1::{Digest, Sha1};

const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
const CLIENT_TRANSACTIONS: u32 = 0x0000_2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
const CLIENT_MULTI_RESULTS: u32 = 0x0002_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;
const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
/// utf8mb4_general_ci.
const CHARSET_UTF8MB4: u8 = 45;
/// One packet's payload at most (bigger ones would need splitting).
const MAX_PAYLOAD: usize = 0xff_ffff;

/// What went wrong talking to the server.
#[derive(Debug)]
pub enum MysqlError {
    /// The connection failed or the server broke the protocol: reconnect.
    Io(io::Error),
    /// The server answered an ERR packet.
    Server { code: u16, state: String, message: String },
}

impl MysqlError {
    /// Whether the connection is still usable after this error.
    pub fn connection_ok(&self) -> bool {
        matches!(self, MysqlError::Server { .. })
    }
}

impl std::fmt::Display for MysqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MysqlError::Io(e) => write!(f, "{e}"),
            MysqlError::Server { code, state, message } => write!(f, "ERROR {code} ({state}): {message}"),
        }
    }
}

impl std::error::Error for MysqlError {}

impl From<io::Error> for MysqlError {
    fn from(e: io::Error) -> Self {
        MysqlError::Io(e)
    }
}

fn broken(why: impl Into<String>) -> MysqlError {
    MysqlError::Io(io::Error::new(io::ErrorKind::InvalidData, why.into()))
}

/// What a statement did (an OK packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Rows changed (with `CLIENT_FOUND_ROWS` off: an `ON DUPLICATE KEY
    /// UPDATE` that changed a row counts 2, one that left it alone 0).
    pub affected_rows: u64,
}

/// A statement's answer: an OK, or a text result set (NULL is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done(Done),
    Rows(Vec<Vec<Option<String>>>),
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ip:port` (no DNS lookups on wasm).
    pub addr: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub timeout: Duration,
}

/// One authenticated connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    seq: u8,
    no_backslash_escapes: bool,
}

impl Conn {
    /// Connects and authenticates.
    pub fn connect(opts: &Options) -> Result<Conn, MysqlError> {
        let stream = TcpStream::connect(opts.addr.as_str())?;
        // May be unsupported on wasm: the host's call deadline is the backstop.
        let _ = stream.set_read_timeout(Some(opts.timeout));
        let _ = stream.set_write_timeout(Some(opts.timeout));
        let _ = stream.set_nodelay(true);
        let mut conn = Conn { stream, seq: 0, no_backslash_escapes: false };
        conn.handshake(opts)?;
        Ok(conn)
    }

    fn handshake(&mut self, opts: &Options) -> Result<(), MysqlError> {
        let greeting = self.read_packet()?;
        if greeting.first() == Some(&0xff) {
            return Err(parse_err(&greeting));
        }
        let mut r = Reader(&greeting);
        if r.u8()? != 10 {
            return Err(broken("not a HandshakeV10 greeting"));
        }
        r.nul_str()?; // server version
        r.take(4)?; // connection id
        let mut scramble = r.take(8)?.to_vec();
        r.take(1)?; // filler
        let caps_low = u32::from(r.u16()?);
        let _charset = r.u8()?;
        let status = r.u16()?;
        let caps_high = u32::from(r.u16()?);
        let server_caps = caps_low | (caps_high << 16);
        let auth_len = usize::from(r.u8()?);
        r.take(10)?; // reserved
        if server_caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = auth_len.saturating_sub(8).max(13);
            let part2 = r.take(n)?;
            // The last byte is a NUL terminator, not scramble.
            scramble.extend(part2.strip_suffix(&[0]).unwrap_or(part2));
        }
        let plugin = if server_caps & CLIENT_PLUGIN_AUTH != 0 { r.nul_str().unwrap_or_default() } else { "" };
        if server_caps & CLIENT_PROTOCOL_41 == 0 {
            return Err(broken("the server does not speak protocol 4.1"));
        }
        self.no_backslash_escapes = status & SERVER_STATUS_NO_BACKSLASH_ESCAPES != 0;

        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH
            | if opts.database.is_empty() { 0 } else { CLIENT_CONNECT_WITH_DB };
        let auth = if plugin.is_empty() || plugin == "mysql_native_password" {
            native_password(opts.password.as_bytes(), &scramble)
        } else {
            // Answer with nothing; the server switches us to a plugin we know.
            Vec::new()
        };
        let mut out = Vec::with_capacity(128);
        out.extend(caps.to_le_bytes());
        out.extend((MAX_PAYLOAD as u32).to_le_bytes());
        out.push(CHARSET_UTF8MB4);
        out.extend([0u8; 23]);
        out.extend(opts.user.as_bytes());
        out.push(0);
        out.push(u8::try_from(auth.len()).map_err(|_| broken("auth response too long"))?);
        out.extend(&auth);
        if !opts.database.is_empty() {
            out.extend(opts.database.as_bytes());
            out.push(0);
        }
        out.extend(b"mysql_native_password\0");
        self.write_packet(&out)?;

        loop {
            let reply = self.read_packet()?;
            match reply.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(parse_err(&reply)),
                Some(0xfe) => {
                    // AuthSwitchRequest: plugin name, then its data.
                    let mut r = Reader(&reply[1..]);
                    let plugin = r.nul_str()?;
                    if plugin != "mysql_native_password" {
                        return Err(broken(format!(
                            "the server wants auth plugin {plugin:?}; only mysql_native_password is supported"
                        )));
                    }
                    let data = r.rest();
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    let auth = native_password(opts.password.as_bytes(), data);
                    self.write_packet(&auth)?;
                }
                _ => return Err(broken("unexpected packet during authentication")),
            }
        }
    }

    /// Runs one statement (`COM_QUERY`).
    pub fn query(&mut self, sql: &str) -> Result<Answer, MysqlError> {
        self.seq = 0;
        let mut out = Vec::with_capacity(sql.len() + 1);
        out.push(COM_QUERY);
        out.extend(sql.as_bytes());
        self.write_packet(&out)?;
        let first = self.read_packet()?;
        match first.first() {
            Some(0x00) => self.ok(&first).map(Answer::Done),
            Some(0xff) => Err(parse_err(&first)),
            Some(0xfb) => Err(broken("LOCAL INFILE requests are not supported")),
            _ => {
                let columns = Reader(&first).lenenc_int()?;
                for _ in 0..columns {
                    self.read_packet()?; // column definitions: not needed
                }
                // Without CLIENT_DEPRECATE_EOF an EOF ends the definitions.
                let eof = self.read_packet()?;
                if !is_eof(&eof) {
                    return Err(broken("expected EOF after column definitions"));
                }
                let mut rows = Vec::new();
                loop {
                    let p = self.read_packet()?;
                    if is_eof(&p) {
                        self.track_status(&p[3..]);
                        break;
                    }
                    if p.first() == Some(&0xff) {
                        return Err(parse_err(&p));
                    }
                    let mut r = Reader(&p);
                    let mut row = Vec::with_capacity(columns as usize);
                    for _ in 0..columns {
                        row.push(r.lenenc_str()?);
                    }
                    rows.push(row);
                }
                Ok(Answer::Rows(rows))
            }
        }
    }

    /// Runs a statement that returns no rows.
    pub fn exec(&mut self, sql: &str) -> Result<Done, MysqlError> {
        match self.query(sql)? {
            Answer::Done(d) => Ok(d),
            Answer::Rows(_) => Ok(Done { affected_rows: 0 }),
        }
    }

    /// Runs a query; its rows (none for a statement without a result set).
    pub fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MysqlError> {
        match self.query(sql)? {
            Answer::Rows(r) => Ok(r),
            Answer::Done(_) => Ok(Vec::new()),
        }
    }

    /// `value` as an SQL string literal for this session.
    pub fn quote(&self, value: &str) -> String {
        quote(value, self.no_backslash_escapes)
    }

    /// Says goodbye (`COM_QUIT`); errors are ignored.
    pub fn close(mut self) {
        self.seq = 0;
        let _ = self.write_packet(&[COM_QUIT]);
    }

    fn ok(&mut self, p: &[u8]) -> Result<Done, MysqlError> {
        let mut r = Reader(&p[1..]);
        let affected_rows = r.lenenc_int()?;
        let _last_insert_id = r.lenenc_int()?;
        if let Ok(status) = r.u16() {
            self.no_backslash_escapes = status & SERVER_STATUS_NO_BACKSLASH_ESCAPES != 0;
        }
        Ok(Done { affected_rows })
    }

    fn track_status(&mut self, eof_tail: &[u8]) {
        if let Some(s) = eof_tail.get(..2) {
            let status = u16::from_le_bytes([s[0], s[1]]);
            self.no_backslash_escapes = status & SERVER_STATUS_NO_BACKSLASH_ESCAPES != 0;
        }
    }

    fn write_packet(&mut self, payload: &[u8]) -> Result<(), MysqlError> {
        if payload.len() >= MAX_PAYLOAD {
            return Err(MysqlError::Io(io::Error::new(io::ErrorKind::InvalidInput, "statement over 16 MiB")));
        }
        let len = payload.len() as u32;
        let mut buf = Vec::with_capacity(payload.len() + 4);
        buf.extend(&len.to_le_bytes()[..3]);
        buf.push(self.seq);
        buf.extend(payload);
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&buf)?;
        self.stream.flush()?;
        Ok(())
    }

    fn read_packet(&mut self) -> Result<Vec<u8>, MysqlError> {
        let mut payload = Vec::new();
        loop {
            let mut head = [0u8; 4];
            self.stream.read_exact(&mut head)?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
            self.seq = head[3].wrapping_add(1);
            let start = payload.len();
            payload.resize(start + len, 0);
            self.stream.read_exact(&mut payload[start..])?;
            // A payload of exactly 2^24-1 bytes continues in the next packet.
            if len < MAX_PAYLOAD {
                return Ok(payload);
            }
        }
    }
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

fn parse_err(p: &[u8]) -> MysqlError {
    let code = p.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]])).unwrap_or(0);
    let (state, msg) = match p.get(3) {
        Some(b'#') => (String::from_utf8_lossy(p.get(4..9).unwrap_or(&[])).into_owned(), p.get(9..)),
        _ => (String::new(), p.get(3..)),
    };
    MysqlError::Server { code, state, message: String::from_utf8_lossy(msg.unwrap_or(&[])).into_owned() }
}

/// `mysql_native_password`: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
pub fn native_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// `value` as a single-quoted SQL string literal. With backslash escapes
/// (the default mode) NUL, quotes, backslash, CR, LF and Ctrl-Z are
/// escaped; under `NO_BACKSLASH_ESCAPES` only `'` is (doubled).
pub fn quote(value: &str, no_backslash_escapes: bool) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' if no_backslash_escapes => out.push_str("''"),
            _ if no_backslash_escapes => out.push(c),
            '\0' => out.push_str("\\0"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MysqlError> {
        if self.0.len() < n {
            return Err(broken("packet too short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, MysqlError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, MysqlError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    fn nul_str(&mut self) -> Result<&'a str, MysqlError> {
        let end = self.0.iter().position(|b| *b == 0).ok_or_else(|| broken("unterminated string"))?;
        let s = self.take(end)?;
        self.take(1)?;
        std::str::from_utf8(s).map_err(|_| broken("string is not UTF-8"))
    }

    fn lenenc_int(&mut self) -> Result<u64, MysqlError> {
        Ok(match self.u8()? {
            n @ 0..=0xfa => u64::from(n),
            0xfc => u64::from(self.u16()?),
            0xfd => {
                let b = self.take(3)?;
                u64::from(u32::from_le_bytes([b[0], b[1], b[2], 0]))
            }
            0xfe => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                u64::from_le_bytes(a)
            }
            _ => return Err(broken("bad length-encoded integer")),
        })
    }

    fn lenenc_str(&mut self) -> Result<Option<String>, MysqlError> {
        if self.0.first() == Some(&0xfb) {
            self.take(1)?;
            return Ok(None);
        }
        let n = usize::try_from(self.lenenc_int()?).map_err(|_| broken("value too long"))?;
        Ok(Some(String::from_utf8_lossy(self.take(n)?).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_what_ends_or_bends_a_literal() {
        assert_eq!(quote("a'b\\c\0\n", false), "'a\\'b\\\\c\\0\\n'");
        assert_eq!(quote("a'b\\c", true), "'a''b\\c'");
    }

    #[test]
    fn native_password_matches_a_known_answer() {
        let scramble = [0u8; 20];
        let got = native_password(b"secret", &scramble);
        assert_eq!(got.len(), 20);
        assert!(native_password(b"", &scramble).is_empty());
    }

    #[test]
    fn lenenc_integers_and_strings() {
        let mut r = Reader(&[0xfc, 0x34, 0x12, 0xfb, 0x02, b'h', b'i']);
        assert_eq!(r.lenenc_int().ok(), Some(0x1234));
        assert_eq!(r.lenenc_str().ok(), Some(None));
        assert_eq!(r.lenenc_str().ok(), Some(Some("hi".to_string())));
    }
}
