//! How the CLI speaks: results on stdout, errors as `error: …` (plus a
//! `hint: …` where one helps) on stderr, or, with `--json`, one JSON object
//! `{"error": {"code", "message", "hint"?}}` on stdout; progress lines on
//! stderr only for work that runs longer than a second; a closed stdout
//! (`wharf … | head -1`) ends the command quietly.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use wharf_log::cli::{PROGRESS_AFTER, Throttle};

/// An error meant for a person: a stable `code` (for `--json`), a message,
/// and what to do about it.
#[derive(Debug)]
pub struct CliError {
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Writes one line to stdout. Unlike `println!`, a closed pipe is an error
/// (which [`report`] turns into a quiet exit), not a panic.
pub fn line(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// `println!` for CLI results: `outln!(...)?`.
macro_rules! outln {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($t:tt)*) => {
        $crate::cli::output::line(format_args!($($t)*))
    };
}
pub(crate) use outln;

/// Whether the error comes from writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

/// The code, message and hint of any error the CLI may fail with.
fn describe(e: &anyhow::Error) -> CliError {
    if let Some(c) = e.chain().find_map(|c| c.downcast_ref::<CliError>()) {
        // Context added above a CliError is kept in its message.
        let message = format!("{e:#}");
        return CliError { code: c.code.clone(), message, hint: c.hint.clone() };
    }
    let code = match e.chain().find_map(|c| c.downcast_ref::<wharf_log::LogError>()) {
        Some(wharf_log::LogError::Corrupt(_)) => "corrupt",
        Some(wharf_log::LogError::Io { .. }) => "io",
        Some(wharf_log::LogError::Locked { .. } | wharf_log::LogError::FollowerLocked { .. }) => "locked",
        Some(wharf_log::LogError::Unsalvageable { .. }) => "unsalvageable",
        Some(_) => "log_error",
        None if e.chain().any(|c| c.is::<io::Error>()) => "io",
        None => "error",
    };
    CliError::new(code, format!("{e:#}"))
}

/// Prints a failed command's error (see the module doc) and gives its exit
/// code: 1, or 0 when stdout was closed under us.
pub fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    let err = describe(e);
    if json {
        let mut obj = json!({"error": {"code": err.code, "message": err.message}});
        if let Some(h) = &err.hint {
            obj["error"]["hint"] = json!(h);
        }
        let _ = line(format_args!("{obj}"));
    } else {
        error_line(&err.message, err.hint.as_deref());
    }
    ExitCode::FAILURE
}

/// Prints `error: <message>` (and `hint: <hint>`) on stderr, the way every
/// command reports a failure in words.
pub fn error_line(message: &str, hint: Option<&str>) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "error: {message}");
    if let Some(h) = hint {
        let _ = writeln!(stderr, "hint: {h}");
    }
}

/// Progress lines on stderr for a loop of steps: the first once the work
/// has run for a second, then at most one a second.
#[derive(Debug)]
pub struct Progress {
    throttle: Throttle,
    enabled: bool,
}

impl Progress {
    /// `enabled: false` (e.g. with `--json`) prints nothing.
    pub fn new(enabled: bool) -> Self {
        Self { throttle: Throttle::new(), enabled }
    }

    pub fn tick(&mut self, msg: impl FnOnce() -> String) {
        if self.enabled && self.throttle.due(Instant::now()) {
            let _ = writeln!(io::stderr(), "{}", msg());
        }
    }
}

/// Runs `work`; if it takes longer than a second, says `msg` on stderr
/// meanwhile (for one long call, such as an upload that is validated).
pub fn while_slow<T>(enabled: bool, msg: &str, work: impl FnOnce() -> T) -> T {
    match enabled {
        true => say_if_slower(PROGRESS_AFTER, io::stderr(), msg, work),
        false => work(),
    }
}

/// Runs `work`; once it has run for `after`, writes `msg` to `out`.
fn say_if_slower<T>(after: Duration, mut out: impl Write + Send, msg: &str, work: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            if wait.recv_timeout(after) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = writeln!(out, "{msg}");
            }
        });
        let out = work();
        drop(done);
        out
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `Write` whose bytes the test can read while it is in use.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    #[test]
    fn work_done_before_the_delay_says_nothing() {
        let out = Shared::default();
        let got = say_if_slower(Duration::from_secs(3600), out.clone(), "slow", || 7);
        assert_eq!(got, 7);
        assert_eq!(out.text(), "");
    }

    #[test]
    fn work_still_running_after_the_delay_says_so_once() {
        let out = Shared::default();
        let seen = out.clone();
        // The work ends only once the line is out (or after a minute).
        say_if_slower(Duration::from_millis(10), out, "uploading ...", || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.text().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert_eq!(seen.text(), "uploading ...\n");
    }
}
