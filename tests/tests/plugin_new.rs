//! `wharf plugin new`: a scaffold per language builds as generated and its
//! component passes `wharf plugin test`; its unit test passes natively.
//!
//! Rust scaffolds build with a shared `CARGO_TARGET_DIR`
//! (`target/scaffolds/cargo`). Python and JavaScript builds are cached in
//! `target/scaffolds/cache`, keyed by a hash of the generated project and
//! the SDK, so they rebuild only when a template or the SDK changes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wharf_tests::{root, wharf_bin};

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wharf() -> Command {
    let mut cmd = Command::new(wharf_bin());
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `wharf plugin new <name> --lang <lang> --dir <tmp>/<name>`.
fn scaffold(tmp: &Path, lang: &str) -> (PathBuf, String) {
    let name = format!("demo-{lang}");
    let dir = tmp.join(&name);
    let out = run(wharf().args(["plugin", "new", &name, "--lang", lang, "--dir"]).arg(&dir), "plugin new");
    assert!(String::from_utf8_lossy(&out.stdout).contains("created"), "{out:?}");
    for f in ["Makefile", "README.md"] {
        assert!(dir.join(f).is_file(), "{lang}: {f} missing");
    }
    (dir, name)
}

/// Every file under `dir` (but build outputs), in order, into `h`.
fn hash_tree(dir: &Path, h: &mut DefaultHasher) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if ["build", "node_modules", "target", "__pycache__", "test", "tests"].contains(&name.as_str()) {
            continue;
        }
        if p.is_dir() {
            hash_tree(&p, h);
        } else {
            name.hash(h);
            std::fs::read(&p).expect("read").hash(h);
        }
    }
}

/// `make build` in `dir`, or the cached component of an identical project.
fn build_cached(dir: &Path, name: &str, lang: &str, sdk_parts: &[&str]) -> PathBuf {
    let mut h = DefaultHasher::new();
    hash_tree(dir, &mut h);
    for part in sdk_parts {
        hash_tree(&root().join("sdk").join(part), &mut h);
    }
    let cache = root().join("target/scaffolds/cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let cached = cache.join(format!("{lang}-{:016x}.wasm", h.finish()));
    let out = dir.join("build").join(format!("{name}.wasm"));
    if cached.is_file() {
        std::fs::create_dir_all(dir.join("build")).expect("build dir");
        std::fs::copy(&cached, &out).expect("copy cached component");
        // Still links node_modules for the unit test.
        if lang == "js" {
            run(Command::new("make").arg("link").current_dir(dir), "make link");
        }
    } else {
        run(Command::new("make").arg("build").current_dir(dir), &format!("{lang}: make build"));
        std::fs::copy(&out, &cached).expect("cache component");
    }
    out
}

fn passes_plugin_test(wasm: &Path, extra: &[&str]) {
    let out = run(wharf().args(["plugin", "test"]).arg(wasm).args(extra), "wharf plugin test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("result    conformant"), "{text}");
    assert!(text.contains("batch 1000   ok: 1000 delivered"), "{text}");
}

#[test]
fn a_rust_scaffold_builds_tests_and_passes_plugin_test() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, name) = scaffold(tmp.path(), "rust");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = root().join("target/scaffolds/cargo");
    run(
        Command::new(&cargo).args(["test", "--quiet"]).current_dir(&dir).env("CARGO_TARGET_DIR", &target),
        "rust scaffold: cargo test",
    );
    run(
        Command::new(&cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target),
        "rust scaffold: cargo build",
    );
    let wasm = target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
    passes_plugin_test(&wasm, &[]);
}

#[test]
fn a_python_scaffold_builds_tests_and_passes_plugin_test() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, name) = scaffold(tmp.path(), "python");
    run(Command::new("make").arg("test").current_dir(&dir), "python scaffold: make test");
    let wasm = build_cached(&dir, &name, "python", &["python", "wit"]);
    passes_plugin_test(&wasm, &["--memory-limit-mib", "128"]);
}

#[test]
fn a_js_scaffold_builds_tests_and_passes_plugin_test() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, name) = scaffold(tmp.path(), "js");
    let wasm = build_cached(&dir, &name, "js", &["js/src", "wit"]);
    run(Command::new("make").arg("test").current_dir(&dir), "js scaffold: make test");
    passes_plugin_test(&wasm, &[]);
}

#[test]
fn a_missing_sdk_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = wharf()
        .args(["plugin", "new", "demo", "--lang", "rust", "--sdk"])
        .arg(tmp.path().join("gone"))
        .arg("--dir")
        .arg(tmp.path().join("demo"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: SDK not found at") && err.contains("(--sdk)"), "{err}");
    assert!(err.contains("hint: pass --sdk PATH"), "{err}");
    assert!(!tmp.path().join("demo").exists(), "nothing is created");
}

#[test]
fn a_non_empty_directory_and_a_bad_name_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("keep.txt"), "x").expect("write");
    let out = wharf()
        .args(["plugin", "new", "demo", "--lang", "js", "--dir"])
        .arg(tmp.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists and is not empty"));
    let out = wharf().args(["plugin", "new", "Bad_Name", "--lang", "python"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid plugin name \"Bad_Name\""));
}
