//! Where a bearer token comes from: the config text, a file or an
//! environment variable.
//!
//! Each entry of `server.admin_tokens` and `namespaces.<ns>.tokens` is a
//! string (the token itself) or a table with exactly one of `token`,
//! `token_file` and `token_env`. Files and variables are read when the config
//! is loaded, so again at every reload (SIGHUP, `wharf reload`): rotating a
//! token is replacing the file's contents and reloading.
//!
//! Invariants:
//! - a resolved token is never empty and has no whitespace or control
//!   character at either end (a `Bearer` header could never carry it);
//! - a file's contents lose one trailing newline (`\n` or `\r\n`), nothing
//!   else;
//! - an error names the key, and for a file its absolute path, never the
//!   token.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// One token entry as written in the config.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `"s3cret"` or `{ token = "s3cret" }`.
    Inline(String),
    /// `{ token_file = "secrets/admin.token" }`: relative to the config file.
    File(PathBuf),
    /// `{ token_env = "WHARF_ADMIN_TOKEN" }`.
    Env(String),
}

/// Never prints an inline token.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(***)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

/// The table form, before the "exactly one key" check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenTable {
    token: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
}

impl<'de> Deserialize<'de> for TokenSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TokenSource;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token string or a table with one of `token`, `token_file`, `token_env`")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TokenSource, E> {
                Ok(TokenSource::Inline(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TokenSource, A::Error> {
                let t = TokenTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (t.token, t.token_file, t.token_env) {
                    (Some(v), None, None) => Ok(TokenSource::Inline(v)),
                    (None, Some(p), None) => Ok(TokenSource::File(p)),
                    (None, None, Some(v)) => Ok(TokenSource::Env(v)),
                    _ => Err(de::Error::custom("give exactly one of `token`, `token_file` and `token_env`")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl TokenSource {
    /// Makes a file path absolute against `base` (the config file's folder).
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        if let Self::File(p) = self {
            *p = super::normalize(&base.join(&*p));
        }
    }

    /// Reads the token. The error is `(key suffix, problem)`, the suffix
    /// being `""` or `.token_file` / `.token_env`.
    pub(super) fn read(&self) -> Result<String, (&'static str, String)> {
        let (suffix, value) = match self {
            Self::Inline(v) => ("", v.clone()),
            Self::File(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| (".token_file", format!("cannot read token file {}: {e}", p.display())))?;
                let value =
                    text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
                (".token_file", value.to_string())
            }
            Self::Env(var) => match std::env::var(var) {
                Ok(v) => (".token_env", v),
                Err(std::env::VarError::NotPresent) => {
                    return Err((".token_env", format!("environment variable {var} is not set")));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err((".token_env", format!("environment variable {var} is not valid UTF-8")));
                }
            },
        };
        let whence = match self {
            Self::Inline(_) => "the token".to_string(),
            Self::File(p) => format!("the token in {}", p.display()),
            Self::Env(var) => format!("the token in environment variable {var}"),
        };
        if value.is_empty() {
            return Err((suffix, format!("{whence} is empty")));
        }
        let bad_end = |c: Option<char>| c.is_some_and(|c| c.is_whitespace() || c.is_control());
        if bad_end(value.chars().next()) || bad_end(value.chars().next_back()) {
            return Err((
                suffix,
                format!(
                    "{whence} starts or ends with whitespace (only one trailing newline of a file is removed)"
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err((suffix, format!("{whence} holds a control character")));
        }
        Ok(value)
    }
}

/// Reads every entry of a token list; errors name `key[i]` plus the
/// entry's own key.
pub(super) fn read_all(key: &str, list: &[TokenSource]) -> Result<Vec<String>, (String, String)> {
    list.iter()
        .enumerate()
        .map(|(i, s)| s.read().map_err(|(suffix, problem)| (format!("{key}[{i}]{suffix}"), problem)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct L {
        tokens: Vec<TokenSource>,
    }

    fn parse(text: &str) -> Result<Vec<TokenSource>, String> {
        toml::from_str::<L>(text).map(|l| l.tokens).map_err(|e| e.to_string())
    }

    #[test]
    fn an_entry_is_a_string_or_a_table_with_one_source() {
        let t = parse(r#"tokens = ["a", { token = "b" }, { token_file = "f" }, { token_env = "V" }]"#)
            .expect("parses");
        assert_eq!(
            t,
            vec![
                TokenSource::Inline("a".into()),
                TokenSource::Inline("b".into()),
                TokenSource::File("f".into()),
                TokenSource::Env("V".into()),
            ]
        );
        let e = parse(r#"tokens = [{ token = "a", token_file = "f" }]"#).expect_err("two sources");
        assert!(e.contains("exactly one of"), "{e}");
        assert!(parse(r#"tokens = [{}]"#).expect_err("none").contains("exactly one of"));
        assert!(parse(r#"tokens = [{ file = "f" }]"#).expect_err("unknown").contains("file"));
        assert!(!format!("{:?}", TokenSource::Inline("hunter2".into())).contains("hunter2"));
    }

    #[test]
    fn a_file_loses_one_trailing_newline_and_an_empty_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = |body: &str| {
            let p = dir.path().join("t");
            std::fs::write(&p, body).expect("write");
            TokenSource::File(p).read()
        };
        assert_eq!(read("abc\n"), Ok("abc".into()));
        assert_eq!(read("abc\r\n"), Ok("abc".into()));
        assert_eq!(read("abc"), Ok("abc".into()));
        assert!(read("abc\n\n").expect_err("two newlines").1.contains("whitespace"));
        assert!(read("\n").expect_err("empty").1.ends_with("is empty"));
        let missing = dir.path().join("nope");
        let (suffix, problem) = TokenSource::File(missing.clone()).read().expect_err("missing");
        assert_eq!(suffix, ".token_file");
        assert!(problem.contains(&missing.display().to_string()), "{problem}");
        let (suffix, problem) =
            TokenSource::Env("WHARF_SURELY_UNSET_VARIABLE_17".into()).read().expect_err("unset");
        assert_eq!(suffix, ".token_env");
        assert!(problem.contains("WHARF_SURELY_UNSET_VARIABLE_17"), "{problem}");
        assert!(TokenSource::Inline(String::new()).read().is_err());
    }
}
