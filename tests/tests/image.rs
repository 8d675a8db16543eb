//! The container image (`Containerfile`, `make image`): built the way
//! `make image` builds it (scripts/image-context.sh, then `podman
//! --storage-driver vfs build`), from the binary and plugins the suite
//! tests. `podman run` cannot set rlimits in this sandbox, so the image's
//! filesystem is exported and its `wharf` runs in a chroot, as the image's
//! user: `--version`, `check-config` of the default config, and `plugin
//! check` of every shipped plugin.
//!
//! Skipped, saying so, where podman is missing (`make test-deps` installs
//! it) or the test is not root (chroot needs root).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use wharf_tests::{plugin, root, wharf_bin};

/// The plugins the image ships (the Makefile's `PLUGINS`).
const SHIPPED: [&str; 5] = ["memcached", "http", "wharf", "replica", "cassandra"];
/// The image's user and group.
const USER: &str = "65532:65532";
const UID: u32 = 65532;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs `cmd`; its output when it exits 0, otherwise a panic naming it.
fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} exited {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn podman(args: &[&str]) -> Output {
    run_ok(Command::new("podman").args(["--storage-driver", "vfs"]).args(args))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's image (by its unique tag) however the test ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["--storage-driver", "vfs", "rmi", "--force", &self.0]).output();
    }
}

/// Runs `/usr/bin/wharf args` in a chroot of `fs`, as the image's user.
fn wharf_in(fs: &Path, args: &[&str]) -> Output {
    run_ok(
        Command::new("chroot")
            .arg(format!("--userspec={USER}"))
            .arg(fs)
            .arg("/usr/bin/wharf")
            .args(args)
            .env("RUST_LOG", "warn"),
    )
}

#[test]
fn the_image_runs_wharf_as_a_non_root_user_with_a_default_config_that_checks() {
    if !on_path("podman") {
        println!("SKIPPED: podman not installed (make test-deps installs it)");
        return;
    }
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX) != 0 {
        println!("SKIPPED: the image smoke test needs root (chroot)");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let context = work.path().join("context");
    let plugins = plugin("http").parent().map(Path::to_path_buf).expect("the plugin dir");
    run_ok(
        Command::new(root().join("scripts/image-context.sh"))
            .arg(&context)
            .env("WHARF_BIN", wharf_bin())
            .env("PLUGIN_DIR", &plugins)
            .env("PLUGINS", SHIPPED.join(" ")),
    );
    let image = Image(format!("localhost/wharf-image-test:{}", std::process::id()));
    let containerfile = root().join("Containerfile");
    podman(&[
        "build",
        "--quiet",
        "--layers=false",
        "-f",
        &containerfile.to_string_lossy(),
        "-t",
        &image.0,
        &context.to_string_lossy(),
    ]);
    std::fs::remove_dir_all(&context).expect("remove the build context");

    // The image's config: a non-root user, wharf as the entrypoint, serving
    // the default config.
    let config = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}",
        &image.0,
    ]);
    let config = text(&config);
    let parts: Vec<&str> = config.split('|').collect();
    assert_eq!(parts.len(), 3, "{config}");
    let user = parts[0];
    assert_eq!(user, USER, "the image must run as uid:gid {USER}");
    assert!(!user.is_empty() && !user.starts_with("0") && !user.starts_with("root"), "{user}");
    assert_eq!(parts[1], r#"["/usr/bin/wharf"]"#);
    assert_eq!(parts[2], r#"["serve","--config","/etc/wharf/wharf.toml"]"#);

    // Its filesystem, as a container of it would see it.
    let created = podman(&["create", &image.0]);
    let container = text(&created);
    let tar = work.path().join("image.tar");
    let exported = Command::new("podman")
        .args(["--storage-driver", "vfs", "export", "-o"])
        .arg(&tar)
        .arg(&container)
        .output();
    podman(&["rm", &container]);
    let exported = exported.expect("podman export");
    assert!(exported.status.success(), "podman export: {}", String::from_utf8_lossy(&exported.stderr));
    let fs = work.path().join("fs");
    std::fs::create_dir(&fs).expect("mkdir fs");
    run_ok(Command::new("tar").arg("-C").arg(&fs).args(["--numeric-owner", "-xf"]).arg(&tar));
    std::fs::remove_file(&tar).expect("remove the tar");

    // FROM scratch: no shell, only what wharf needs.
    assert!(!fs.join("bin/sh").exists(), "the image has a shell");
    for p in SHIPPED {
        let wasm = fs.join(format!("usr/lib/wharf/plugins/{p}.wasm"));
        let want = std::fs::read(plugin(p)).expect("the built plugin");
        assert_eq!(std::fs::read(&wasm).ok(), Some(want), "{} is not the built plugin", wasm.display());
    }
    let data = std::fs::metadata(fs.join("var/lib/wharf")).expect("/var/lib/wharf in the image");
    assert!(
        data.is_dir() && data.uid() == UID && data.gid() == UID,
        "/var/lib/wharf owned by {}:{}",
        data.uid(),
        data.gid()
    );
    let var_lib = std::fs::metadata(fs.join("var/lib")).expect("/var/lib");
    assert_eq!(var_lib.uid(), 0, "/var/lib must stay root's");

    // The binary runs with only the libraries the image holds.
    let host = text(&run_ok(Command::new(wharf_bin()).arg("--version")));
    let inside = text(&wharf_in(&fs, &["--version"]));
    assert_eq!(inside, host);
    assert!(inside.starts_with("wharf "), "{inside}");

    // The default config passes, its plugin loaded and initialised by the
    // image's user, whose data dir takes the compiled-plugin cache.
    let checked = text(&wharf_in(&fs, &["check-config", "--config", "/etc/wharf/wharf.toml"]));
    assert!(checked.contains(": ok (") && checked.contains("init ok"), "{checked}");
    let cache =
        std::fs::metadata(fs.join("var/lib/wharf/.plugin-cache")).expect("the plugin cache in the data dir");
    assert_eq!(cache.uid(), UID);

    // Every shipped plugin loads in the image's wharf.
    for p in SHIPPED {
        let report = text(&wharf_in(&fs, &["plugin", "check", &format!("/usr/lib/wharf/plugins/{p}.wasm")]));
        assert!(report.contains("wit      wharf:target@"), "{p}: {report}");
    }
}
