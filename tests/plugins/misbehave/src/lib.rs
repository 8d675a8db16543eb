//! A plugin that misbehaves on command (`config.mode`), for sandbox tests.
//!
//! - `ok`: delivers everything.
//! - `loop`: spins forever on the CPU (the epoch deadline must stop it).
//! - `sleep`: blocks in a host call for an hour (the tokio deadline must stop it).
//! - `oom`: allocates until memory runs out (the store limit must stop it).
//! - `panic`: panics (a trap; the instance must be thrown away).
//! - `panic-first`: panics on a message's first attempt, delivers on the next.
//! - `connect`: opens a TCP connection to `config.addr` and writes the payload.
//!
//! With `config.poison` set, the mode applies only to messages whose
//! payload equals it; every other message is delivered, and with
//! `config.record` (an `ip:port`) written there as one line `key payload`,
//! so a test sees what arrived and in which order.
//!
//! With `config.gate` (an `ip:port`), `init` connects there first and fails
//! when it cannot: a test closes the gate to make every later `init` fail.
//!
//! `config.reconcile` says what `reconcile` does (default: nothing):
//! - `count`: repairs as many as this instance's passes so far (1, 2, ...).
//! - `errors`: repairs one and reports an error naming the pass.
//! - `trap`: panics.

use std::io::Write as _;
use std::net::TcpStream;

use wharf_sdk::{Config, Error, Message, Reconciled, Target};

#[derive(Debug)]
pub struct Misbehave {
    mode: String,
    addr: Option<String>,
    poison: Option<Vec<u8>>,
    record: Option<String>,
    reconcile: Option<String>,
    passes: u64,
}

impl Target for Misbehave {
    fn init(config: Config) -> Result<Self, Error> {
        if let Some(gate) = config.get("gate") {
            TcpStream::connect(gate).map_err(|e| Error::reject(format!("init gate {gate} closed: {e}")))?;
        }
        Ok(Self {
            mode: config.require("mode")?.to_string(),
            addr: config.get("addr").map(str::to_string),
            poison: config.get("poison").map(|p| p.as_bytes().to_vec()),
            record: config.get("record").map(str::to_string),
            reconcile: config.get("reconcile").map(str::to_string),
            passes: 0,
        })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        match &self.poison {
            Some(p) if *p != msg.payload => self.record(msg),
            _ => self.misbehave(msg),
        }
    }

    fn reconcile(&mut self, _budget_ms: u64) -> Reconciled {
        self.passes += 1;
        match self.reconcile.as_deref() {
            Some("count") => Reconciled { repaired: self.passes, errors: Vec::new() },
            Some("errors") => {
                Reconciled { repaired: 1, errors: vec![format!("misbehave: pass {} left one", self.passes)] }
            }
            Some("trap") => panic!("misbehave: reconcile panics on purpose"),
            _ => Reconciled::default(),
        }
    }
}

impl Misbehave {
    fn record(&self, msg: &Message) -> Result<(), Error> {
        let Some(addr) = &self.record else { return Ok(()) };
        let mut s = TcpStream::connect(addr)?;
        let line =
            format!("{} {}\n", msg.key.as_deref().unwrap_or(""), String::from_utf8_lossy(&msg.payload));
        s.write_all(line.as_bytes())?;
        Ok(())
    }

    fn misbehave(&self, msg: &Message) -> Result<(), Error> {
        match self.mode.as_str() {
            "ok" => Ok(()),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(())
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("misbehave: panic on purpose"),
            "panic-first" if msg.attempt == 1 => panic!("misbehave: panic on the first attempt"),
            "panic-first" => Ok(()),
            "connect" => {
                let addr = self.addr.as_deref().ok_or_else(|| Error::reject("connect mode needs addr"))?;
                let mut s = TcpStream::connect(addr)?;
                s.write_all(&msg.payload)?;
                Ok(())
            }
            other => Err(Error::reject(format!("unknown mode {other:?}"))),
        }
    }
}

wharf_sdk::export_target!(Misbehave);
