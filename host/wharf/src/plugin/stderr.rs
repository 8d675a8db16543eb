//! A plugin's standard error, kept in memory: the last few KiB only (older
//! bytes are dropped, so a chatty plugin never fills anything and never
//! traps for it). When a call traps, its tail names the cause (a Rust
//! plugin's panic prints `panicked at ...: <message>` there).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes of standard error kept per instance.
const KEEP: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    /// The last non-empty lines written (at most `lines`), joined by ` | `.
    pub fn last_lines(&self, lines: usize) -> String {
        let buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&buf.iter().copied().collect::<Vec<u8>>()).into_owned();
        let kept: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        kept[kept.len().saturating_sub(lines)..].join(" | ")
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend(data.iter().copied());
        let excess = buf.len().saturating_sub(KEEP);
        buf.drain(..excess);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn only_the_tail_is_kept() {
        let tail = StderrTail::default();
        let mut w = tail.clone();
        w.write_all(&vec![b'x'; 10_000]).await.expect("write");
        w.write_all(b"\npanicked at src/lib.rs:1:1:\nboom\n").await.expect("write");
        assert_eq!(tail.last_lines(2), "panicked at src/lib.rs:1:1: | boom");
        assert!(tail.buf.lock().expect("lock").len() <= KEEP);
    }
}
