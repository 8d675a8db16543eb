//! TOML text to [`Config`], with every error naming its dotted key
//! (`namespaces.orders.retry.max_backoff_ms`) and, as extra context, its
//! line: syntax errors, type errors, missing and unknown keys alike.

use std::ops::Range;

use super::Config;

/// What went wrong, where: `(dotted key, problem, line context)`.
pub(super) type Located = (String, String, Option<String>);

/// Parses a config file's text.
pub(super) fn parse(text: &str) -> Result<Config, Located> {
    let de = toml::Deserializer::parse(text).map_err(|e| {
        // A syntax error: no serde path, so the key comes from the text.
        let key = e.span().map(|s| key_at(text, s.start)).unwrap_or_else(|| "(document)".into());
        located(text, key, e.message(), e.span())
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        let inner = e.into_inner();
        let problem = inner.message().to_string();
        // serde names an unknown key only in the message; make sure the
        // path ends with it.
        if let Some(field) = problem.strip_prefix("unknown field `").and_then(|r| r.split('`').next())
            && !key.ends_with(field)
        {
            key = if key == "." || key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
        }
        if key.is_empty() || key == "." {
            key = "(document)".into();
        }
        located(text, key, &problem, inner.span())
    })
}

/// The error with its line as context, both without secrets: quoted
/// values leave the problem text when the key or its line may hold a
/// secret (see [`line_context`] for the line).
fn located(text: &str, key: String, problem: &str, span: Option<Range<usize>>) -> Located {
    let raw_line = span.clone().map(|s| line_of(text, s.start).1);
    let secret = key.rsplit('.').next().is_some_and(crate::plugin::is_secret_key)
        || raw_line.is_some_and(may_hold_secret);
    let problem = if secret { hide_quoted(problem) } else { problem.to_string() };
    (key, problem, span.map(|s| line_context(text, s)))
}

/// Whether a config line may carry a secret.
fn may_hold_secret(line: &str) -> bool {
    let names_one =
        line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(crate::plugin::is_secret_key);
    let url_with_secret = line.split("://").skip(1).any(|rest| {
        let url = rest.split(['"', '\'', ' ']).next().unwrap_or("");
        url.contains('@') || url.contains('?')
    });
    names_one || url_with_secret
}

/// `problem` with the contents of every quoted string (`"…"`, `` `…` ``
/// excepted: serde quotes key names that way) masked.
fn hide_quoted(problem: &str) -> String {
    let mut out = String::with_capacity(problem.len());
    for (i, part) in problem.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        out.push_str(if i % 2 == 1 { "***" } else { part });
    }
    out
}

/// `line 7: partitions = "four"` for the line holding `span`; a line that
/// may hold a secret (a secret-named key, a URL with userinfo or a query)
/// is shown up to its `=` only.
pub(super) fn line_context(text: &str, span: Range<usize>) -> String {
    let (no, line) = line_of(text, span.start);
    match line.split_once('=') {
        Some((lhs, _)) if may_hold_secret(line) => {
            format!("line {no}: {} = (value hidden: it may hold a secret)", lhs.trim())
        }
        _ => format!("line {no}: {}", line.trim()),
    }
}

fn line_of(text: &str, offset: usize) -> (usize, &str) {
    let start = offset.min(text.len());
    let no = text[..start].matches('\n').count() + 1;
    (no, text.lines().nth(no - 1).unwrap_or(""))
}

/// The dotted key a line is about: the table header above it plus the key
/// left of its `=` (best effort, for syntax errors only).
fn key_at(text: &str, offset: usize) -> String {
    let (no, _) = line_of(text, offset);
    let mut table = String::new();
    let mut key = String::new();
    for (i, line) in text.lines().take(no).enumerate() {
        let line = line.trim();
        if let Some(h) = header(line) {
            table = h;
            key.clear();
        } else if i + 1 == no
            && let Some((lhs, _)) = line.split_once('=')
        {
            key = unquote(lhs);
        }
    }
    match (table.is_empty(), key.is_empty()) {
        (true, true) => "(document)".into(),
        (true, false) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

/// `[a.b]` or `[[a.b]]` → `a.b`.
fn header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(unquote(inner[..end].trim_start_matches('[')))
}

fn unquote(key: &str) -> String {
    key.split('.').map(|p| p.trim().trim_matches(['"', '\''])).collect::<Vec<_>>().join(".")
}

/// The line that sets a dotted key, if the text has it plainly (a
/// `[table]` header then `key =`, or `key =` inside that table): context
/// for errors found after parsing.
pub(super) fn line_of_key(text: &str, dotted: &str) -> Option<String> {
    let mut table = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if let Some(h) = header(t) {
            table = h;
            if table == dotted {
                return Some(line_context(text, offset..offset));
            }
        } else if let Some((lhs, _)) = t.split_once('=') {
            let k = unquote(lhs);
            let full = if table.is_empty() { k } else { format!("{table}.{k}") };
            if full == dotted || dotted.starts_with(&format!("{full}.")) {
                return Some(line_context(text, offset..offset));
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syntax_error_names_the_key_of_its_line() {
        let (key, _, line) = parse("[namespaces.o]\npartitions = = 4\n").expect_err("syntax");
        assert_eq!(key, "namespaces.o.partitions");
        assert_eq!(line.as_deref(), Some("line 2: partitions = = 4"));
    }

    #[test]
    fn type_and_unknown_key_errors_name_the_dotted_key() {
        let (key, problem, line) = parse("[namespaces.o]\npartitions = \"four\"\n").expect_err("type");
        assert_eq!(key, "namespaces.o.partitions");
        assert!(problem.contains("invalid type"), "{problem}");
        assert_eq!(line.as_deref(), Some("line 2: partitions = \"four\""));
        let (key, ..) = parse("[namespaces.o.retry]\nbogus = 1\n").expect_err("unknown");
        assert_eq!(key, "namespaces.o.retry.bogus");
    }

    #[test]
    fn a_line_that_may_hold_a_secret_is_not_echoed() {
        let (key, problem, line) = parse("[server]\nadmin_tokens = \"hunter2\"\n").expect_err("type");
        assert_eq!(key, "server.admin_tokens");
        assert!(!problem.contains("hunter2") && problem.contains("***"), "{problem}");
        assert_eq!(line.as_deref(), Some("line 2: admin_tokens = (value hidden: it may hold a secret)"));
        let text = "[namespaces.o]\npartitions = 4\nx = { url = \"http://u:pw@h/\" }\n";
        let (_, _, line) = parse(text).expect_err("unknown key");
        assert!(!line.as_deref().unwrap_or("").contains("pw@"), "{line:?}");
    }

    #[test]
    fn the_line_of_a_key_is_found_in_tables_and_inline() {
        let text = "[namespaces.o]\nretry = { max_backoff_ms = 1 }\n[namespaces.o.breaker]\nfailures = 0\n";
        assert_eq!(
            line_of_key(text, "namespaces.o.breaker.failures").as_deref(),
            Some("line 4: failures = 0")
        );
        assert_eq!(
            line_of_key(text, "namespaces.o.retry.max_backoff_ms").as_deref(),
            Some("line 2: retry = { max_backoff_ms = 1 }")
        );
    }
}
