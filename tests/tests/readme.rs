//! The README's manual example ("What it is": `check-config`, `serve`, then
//! the curl and the reply it shows) runs as written.
//!
//! The commands run from a directory laid out like the repo root: a copy of
//! `examples/wharf.toml` and a `target` symlink to the real build output.
//! The only change is to port numbers: the example's fixed 7070 (HTTP API)
//! and 11211 (memcached) become free ports, in the config copy and in the
//! curl line, so the test never collides with anything else listening. The
//! `make build` and `memcached` lines are not run: the build is the suite's
//! precondition, and memcached is started by the harness on its free port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_tests::{Memcached, eventually, free_port, listens, root, wharf_bin};

/// The `sh` blocks of the README's "What it is" section, as command lines
/// (backslash continuations joined; comment lines kept apart).
fn section_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme.find("## What it is").expect("section `What it is`");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut commands = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap_or("");
        let mut current = String::new();
        for line in block.lines() {
            current.push_str(line.strip_suffix('\\').unwrap_or(line));
            if !line.ends_with('\\') {
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// Drops the `# comment` after a command.
fn command_part(line: &str) -> &str {
    line.split("  #").next().unwrap_or(line).trim().trim_end_matches('&').trim()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `serve` in `dir` until this very process listens on `port`;
/// `None` if it exits first (the port was taken meanwhile).
fn serve_on(dir: &Path, serve: &str, port: u16) -> Option<Killed> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {serve}"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut wharf = Killed(child);
    let pid = wharf.0.id();
    eventually(Duration::from_secs(120), "wharf listening", || {
        if let Ok(Some(_)) = wharf.0.try_wait() {
            return Some(false);
        }
        listens(pid, port).then_some(true)
    })
    .then_some(wharf)
}

fn sh(dir: &Path, command: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(command).current_dir(dir).output().expect("run sh")
}

#[test]
fn the_manual_example_works_as_written() {
    let lines = section_commands();
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` line in: {lines:?}"))
    };
    let check = command_part(find("wharf check-config")).to_string();
    let serve = command_part(find("wharf serve")).to_string();
    let curl = command_part(find("curl ")).to_string();
    let shown = lines
        .iter()
        .skip_while(|l| !l.contains("curl "))
        .find_map(|l| l.trim().strip_prefix("# {").map(|j| format!("{{{j}")))
        .expect("the reply shown after the curl");
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("the shown reply is JSON");

    // A directory shaped like the repo root (see the module comment).
    let mc = Memcached::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = wharf_bin().parent().and_then(Path::parent).expect("target dir").to_path_buf();
    std::os::unix::fs::symlink(&target, dir.path().join("target")).expect("symlink target");
    std::fs::create_dir(dir.path().join("examples")).expect("mkdir examples");
    let example = std::fs::read_to_string(root().join("examples/wharf.toml")).expect("examples/wharf.toml");
    assert!(example.contains("7070") && example.contains("11211"), "the example's ports changed");
    // The README's command line has a fixed port; a free one is picked, and
    // picked again if another process takes it before `serve` binds it.
    let (port, _wharf) = (0..5)
        .find_map(|_| {
            let port = free_port();
            let config = example.replace("7070", &port.to_string()).replace("11211", &mc.port.to_string());
            std::fs::write(dir.path().join("examples/wharf.toml"), config).expect("write config");
            let out = sh(dir.path(), &check);
            assert!(out.status.success(), "{check}: {}", String::from_utf8_lossy(&out.stderr));
            serve_on(dir.path(), &serve, port).map(|w| (port, w))
        })
        .expect("`serve` never got a free port in 5 tries");

    let out = sh(dir.path(), &curl.replace(":7070", &format!(":{port}")));
    assert!(out.status.success(), "{curl}: {}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(reply, shown, "the README shows a reply the example does not give");

    // And the write arrives where the example says it goes.
    let got = eventually(Duration::from_secs(30), "order-1 in memcached", || mc.get("order-1"));
    assert_eq!(got, b"hello");
}
