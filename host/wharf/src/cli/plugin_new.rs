//! `wharf plugin new`: scaffold a plugin project (Rust, Python or
//! JavaScript) outside the repo: sources, a Makefile (`build`, `test`,
//! `check`), a unit test and a README. The project points at an SDK
//! checkout: `--sdk`, by default the one this binary was built from.
//!
//! The templates are the files under `templates/`, with `{{name}}`,
//! `{{crate}}`, `{{class}}` and `{{sdk}}` filled in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::output::{CliError, outln};

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and `-` (e.g. `orders-webhook`).
    pub name: String,
    /// The language of the plugin.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// The SDK checkout (the `sdk/` directory of a Wharf checkout); default:
    /// the one this binary was built from.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
    /// Where to create the project (default: `./<name>`); must not exist or be empty.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The SDK of the checkout this binary was built from.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk");

/// (path in the project, template) per language.
const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("templates/rust/lib.rs")),
    ("Makefile", include_str!("templates/rust/Makefile")),
    ("README.md", include_str!("templates/rust/README.md")),
];
const PYTHON: &[(&str, &str)] = &[
    ("plugin.py", include_str!("templates/python/plugin.py")),
    ("test_plugin.py", include_str!("templates/python/test_plugin.py")),
    ("Makefile", include_str!("templates/python/Makefile")),
    ("README.md", include_str!("templates/python/README.md")),
];
const JS: &[(&str, &str)] = &[
    ("plugin.js", include_str!("templates/js/plugin.js")),
    ("plugin.test.js", include_str!("templates/js/plugin.test.js")),
    ("package.json", include_str!("templates/js/package.json")),
    ("Makefile", include_str!("templates/js/Makefile")),
    ("README.md", include_str!("templates/js/README.md")),
];

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let sdk = find_sdk(args.sdk.as_deref(), args.lang)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(CliError::new("exists", format!("{} already exists and is not empty", dir.display()))
            .hint("pick another --dir, or remove it")
            .into());
    }
    let sdk_text = sdk.to_str().ok_or_else(|| {
        CliError::new("sdk_path", format!("the SDK path {} is not valid UTF-8", sdk.display()))
    })?;
    let vars = [
        ("{{name}}", args.name.clone()),
        ("{{crate}}", args.name.replace('-', "_")),
        ("{{class}}", class_name(&args.name)),
        ("{{sdk}}", sdk_text.to_string()),
    ];
    let files = match args.lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    for (rel, template) in files {
        let text = vars.iter().fold((*template).to_string(), |t, (k, v)| t.replace(k, v));
        write(&dir.join(rel), &text)?;
    }
    if args.lang == Lang::Rust {
        // Start from the checkout's lock file: the same dependency versions
        // the SDK is built and tested with, and no registry lookups.
        if let Some(lock) = sdk.parent().map(|p| p.join("Cargo.lock")).filter(|p| p.is_file()) {
            std::fs::copy(&lock, dir.join("Cargo.lock"))
                .map_err(|e| CliError::new("io", format!("copying {}: {e}", lock.display())))?;
        }
    }
    let lang = match args.lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    outln!("created {} ({lang} plugin, SDK {})", dir.display(), sdk.display())?;
    outln!("next: cd {} && make test && make build && make check", dir.display())?;
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    match ok {
        true => Ok(()),
        false => Err(CliError::new("invalid_name", format!("invalid plugin name {name:?}"))
            .hint("use lower-case letters, digits and `-`, starting with a letter (e.g. orders-webhook)")
            .into()),
    }
}

/// `orders-webhook` -> `OrdersWebhook`.
fn class_name(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The SDK directory, absolute, with what the language needs in it.
fn find_sdk(given: Option<&Path>, lang: Lang) -> anyhow::Result<PathBuf> {
    let (path, origin) = match given {
        Some(p) => (p.to_path_buf(), "--sdk"),
        None => (PathBuf::from(BUILT_FROM_SDK), "the checkout this wharf was built from"),
    };
    let hint = "pass --sdk PATH: the `sdk/` directory of a Wharf checkout";
    let sdk = std::fs::canonicalize(&path).map_err(|e| {
        CliError::new("sdk_missing", format!("SDK not found at {} ({origin}): {e}", path.display()))
            .hint(hint)
    })?;
    let needs: &[&str] = match lang {
        Lang::Rust => &["Cargo.toml", "src/lib.rs"],
        Lang::Python => &["python/wharf_sdk/__init__.py", "python/wharf_main.py", "wit/world.wit"],
        Lang::Js => &["js/src/index.js", "js/build.mjs", "wit/world.wit"],
    };
    if let Some(missing) = needs.iter().find(|n| !sdk.join(n).is_file()) {
        return Err(CliError::new(
            "sdk_missing",
            format!("{} ({origin}) is not a Wharf SDK: {missing} is missing", sdk.display()),
        )
        .hint(hint)
        .into());
    }
    Ok(sdk)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let io = |e: std::io::Error| CliError::new("io", format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)?;
    Ok(())
}
