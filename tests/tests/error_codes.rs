//! Every error code the host can return is in the error table of
//! `docs/api.md` with its HTTP status, and the documented limits of the API
//! are enforced with a typed code (not clamped, not ignored).
//!
//! The codes are found by scanning `host/wharf/src` for the places a domain
//! error gets its code: `Error::new(ErrorKind::K, "code", …)` (also as
//! `ApiError`, or `Self` in `error.rs`), `Error::bad("code", …)`, and a
//! `(ErrorKind::K, "code")` pair (the transaction store's mapping). A
//! constructor whose code is not a literal would hide a code from this scan,
//! so one is an error unless it is listed in [`NOT_LITERAL`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use wharf_tests::{HttpSink, Wharf, b64, eventually, root};

/// Constructors that take their code from a variable, with the variable:
/// `Error::bad` itself, and the transaction store's mapping, whose codes
/// are `(ErrorKind, "code")` pairs the scan reads.
const NOT_LITERAL: &[(&str, &str)] = &[("error.rs", "code"), ("services/txn.rs", "code")];

/// The HTTP status of each error kind, as `adapters/error.rs` maps it (the
/// test checks that file says so).
const STATUS: &[(&str, &str, u16)] = &[
    ("Invalid", "BAD_REQUEST", 400),
    ("Unprocessable", "UNPROCESSABLE_ENTITY", 422),
    ("Unauthenticated", "UNAUTHORIZED", 401),
    ("Forbidden", "FORBIDDEN", 403),
    ("NotFound", "NOT_FOUND", 404),
    ("MethodNotAllowed", "METHOD_NOT_ALLOWED", 405),
    ("TimedOut", "REQUEST_TIMEOUT", 408),
    ("Gone", "GONE", 410),
    ("Conflict", "CONFLICT", 409),
    ("TooLarge", "PAYLOAD_TOO_LARGE", 413),
    ("Overloaded", "TOO_MANY_REQUESTS", 429),
    ("Unavailable", "SERVICE_UNAVAILABLE", 503),
    ("StorageFull", "INSUFFICIENT_STORAGE", 507),
    ("Internal", "INTERNAL_SERVER_ERROR", 500),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The argument starting at `s` (up to its `,` or `)` at depth 0), trimmed.
fn argument(s: &str) -> &str {
    let mut depth = 0i32;
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => return s[..i].trim(),
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => return s[..i].trim(),
            _ => {}
        }
    }
    s.trim()
}

/// `"code"` → `code`; anything else → `None`.
fn literal(arg: &str) -> Option<&str> {
    arg.strip_prefix('"')?.strip_suffix('"').filter(|c| !c.contains('"'))
}

/// `ErrorKind::Conflict` → `Conflict` (also with a `crate::error::` path).
fn kind_of(arg: &str) -> Option<&str> {
    let (path, kind) = arg.rsplit_once("ErrorKind::")?;
    (path.is_empty() || path.ends_with("error::")).then_some(kind).filter(|k| k.chars().all(is_ident))
}

/// Where a code is made: file (relative to `src/`), and the kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: String,
    kind: String,
}

/// Every code in the host's source, with where and with which kind it is
/// made; panics on a constructor whose code cannot be read.
fn codes_in_source() -> BTreeMap<String, BTreeSet<Site>> {
    let src = root().join("host/wharf/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut codes: BTreeMap<String, BTreeSet<Site>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read source");
        let file = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
        let mut add = |code: &str, kind: &str| {
            codes.entry(code.to_string()).or_default().insert(Site { file: file.clone(), kind: kind.into() });
        };
        // `Error::new(kind, code, …)`, `Error::bad(code, …)` (and `ApiError::`,
        // and `Self::` in error.rs).
        for (at, _) in text.match_indices("::new(").chain(text.match_indices("::bad(")) {
            let before = &text[..at];
            let ty_start = before.rfind(|c: char| !is_ident(c)).map_or(0, |i| i + 1);
            let ty = &before[ty_start..];
            let path_before = before[..ty_start].trim_end_matches(|c: char| is_ident(c) || c == ':');
            let qualified = &before[path_before.len()..ty_start];
            let ours = match ty {
                "Error" | "ApiError" => qualified.is_empty() || qualified.ends_with("error::"),
                "Self" => file == "error.rs",
                _ => false,
            };
            if !ours {
                continue;
            }
            let args = &text[at + "::new(".len()..];
            let (kind, code_arg) = if text[at..].starts_with("::bad(") {
                (Some("Invalid"), argument(args))
            } else {
                let first = argument(args);
                let rest = &args[args.find(first).map_or(0, |i| i + first.len())..];
                (kind_of(first), argument(rest.trim_start().trim_start_matches(',')))
            };
            match (kind, literal(code_arg)) {
                (Some(kind), Some(code)) => add(code, kind),
                _ if NOT_LITERAL.contains(&(file.as_str(), code_arg)) => {}
                _ => unreadable.push(format!("{file}: {}", text[ty_start..].lines().next().unwrap_or(""))),
            }
        }
        // `(ErrorKind::K, "code")`: a kind and a code paired up front.
        for (at, _) in text.match_indices("ErrorKind::") {
            let open = text[..at].trim_end_matches(|c: char| is_ident(c) || c == ':').trim_end();
            if !open.ends_with('(') || text[..at].ends_with("io::") {
                continue;
            }
            let first = argument(&text[at..]);
            let rest = text[at + first.len()..].trim_start();
            if let (Some(kind), Some(rest)) = (kind_of(first), rest.strip_prefix(','))
                && let Some(code) = literal(argument(rest))
            {
                add(code, kind);
            }
        }
    }
    assert!(
        unreadable.is_empty(),
        "error constructors whose kind or code is not a literal (the scan cannot see their codes; \
         use literals, or list the variable in NOT_LITERAL once its codes are scanned otherwise):\n{}",
        unreadable.join("\n")
    );
    codes
}

/// The rows of the `## Error codes` table of docs/api.md: (status cell,
/// codes named in the code cell).
fn documented_rows() -> Vec<(String, Vec<String>)> {
    let api = std::fs::read_to_string(root().join("docs/api.md")).expect("docs/api.md");
    let section = api.split("\n## Error codes\n").nth(1).expect("docs/api.md has a `## Error codes` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("| ---") && !l.starts_with("| Status"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let codes = cells
                .get(2)
                .map_or(Vec::new(), |c| c.split('`').skip(1).step_by(2).map(str::to_string).collect());
            (cells.get(1).map_or(String::new(), |s| s.to_string()), codes)
        })
        .collect()
}

#[test]
fn every_error_code_the_host_returns_is_in_the_api_error_table_with_its_status() {
    let error_rs =
        std::fs::read_to_string(root().join("host/wharf/src/adapters/error.rs")).expect("error.rs");
    for (kind, name, _) in STATUS {
        let mapping = format!("ErrorKind::{kind} => StatusCode::{name}");
        assert!(error_rs.contains(&mapping), "adapters/error.rs no longer maps {mapping}; update STATUS");
    }
    let status_of = |kind: &str| {
        STATUS
            .iter()
            .find(|(k, _, _)| *k == kind)
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("unknown kind {kind}"))
    };
    let codes = codes_in_source();
    assert!(codes.len() >= 30, "the scan found only {} codes: {:?}", codes.len(), codes.keys());
    for (code, sites) in &codes {
        assert!(
            code.starts_with(|c: char| c.is_ascii_lowercase())
                && code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "error code {code:?} ({sites:?}) is not snake_case"
        );
    }
    for code in ["invalid_timeout", "invalid_limit", "invalid_cursor", "role_consumer", "internal"] {
        assert!(codes.contains_key(code), "the scan missed {code}");
    }

    let rows = documented_rows();
    let mut missing = Vec::new();
    for (code, sites) in &codes {
        for site in sites {
            let status = status_of(&site.kind).to_string();
            let documented = rows.iter().any(|(s, c)| s.contains(&status) && c.iter().any(|x| x == code));
            if !documented {
                missing.push(format!("{status} `{code}` (made in {}, kind {})", site.file, site.kind));
            }
        }
    }
    assert!(missing.is_empty(), "not in the error table of docs/api.md:\n{}", missing.join("\n"));
    let stale: Vec<&String> =
        rows.iter().flat_map(|(_, c)| c).filter(|c| !codes.contains_key(c.as_str())).collect();
    assert!(stale.is_empty(), "the error table of docs/api.md names codes the host never returns: {stale:?}");
}

// ------------------------------------------------------- documented limits

fn expect_error(reply: &wharf_tests::Reply, status: u16, code: &str) {
    assert_eq!((reply.status, &reply.body["error"]["code"]), (status, &json!(code)), "{:?}", reply.body);
}

#[test]
fn a_write_timeout_over_sixty_seconds_is_refused_and_writes_nothing() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("orders", 1, ""));
    let one = |timeout_ms: u64| json!({"key": "k", "payload": b64(b"x"), "wait": "visible", "timeout_ms": timeout_ms});
    expect_error(&w.post("/v1/namespaces/orders/messages", &one(60_001)), 400, "invalid_timeout");
    let batch = json!({"messages": [{"payload": b64(b"y")}], "wait": "visible", "timeout_ms": 86_400_000});
    expect_error(&w.post("/v1/namespaces/orders/messages/batch", &batch), 400, "invalid_timeout");
    let durable = json!({"payload": b64(b"z"), "timeout_ms": 60_001});
    expect_error(&w.post("/v1/namespaces/orders/messages", &durable), 400, "invalid_timeout");
    let commit = json!({"chunks": 1, "wait": "visible", "timeout_ms": 60_001});
    expect_error(
        &w.post("/v1/namespaces/orders/transactions/0123456789abcdef0123456789abcdef/commit", &commit),
        400,
        "invalid_timeout",
    );

    // The limit itself is fine, and the refusals wrote nothing: the first
    // record of the only partition is this one.
    let ok = w.post("/v1/namespaces/orders/messages", &one(60_000));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["message_id"], json!("0-0"), "a refused write was appended: {:?}", ok.body);
    assert_eq!(ok.body["visible"], json!(true), "{:?}", ok.body);
}

/// A namespace whose target rejected one message: one DLQ entry.
fn with_one_dlq_entry(sink: &HttpSink) -> (Wharf, String) {
    sink.set(|b| b.reject_keys = vec!["poison".into()]);
    let w = Wharf::start(&sink.namespace("orders", 2, ""));
    let id = w.write_id("orders", "poison", b"bad");
    eventually(Duration::from_secs(30), "the DLQ entry", || {
        (w.dlq_ids("orders", None) == [id.clone()]).then_some(())
    });
    (w, id)
}

#[test]
fn a_dlq_page_size_outside_one_to_a_thousand_is_refused() {
    let sink = HttpSink::start();
    let (w, id) = with_one_dlq_entry(&sink);
    for bad in ["0", "1001", "-1", "many", ""] {
        let r = w.get(&format!("/v1/namespaces/orders/dlq?limit={bad}"));
        expect_error(&r, 400, "invalid_limit");
    }
    for good in [1, 1000] {
        let r = w.get(&format!("/v1/namespaces/orders/dlq?limit={good}"));
        assert_eq!(r.status, 200, "limit={good}: {:?}", r.body);
        assert_eq!(r.body["entries"][0]["message_id"], json!(id), "{:?}", r.body);
    }
}

#[test]
fn a_dlq_cursor_that_is_not_a_message_id_is_refused() {
    let sink = HttpSink::start();
    let (w, id) = with_one_dlq_entry(&sink);
    for bad in ["zzz", "1-", "-1", "1-2-3", "x-1", ""] {
        let r = w.get(&format!("/v1/namespaces/orders/dlq?after={bad}"));
        expect_error(&r, 400, "invalid_cursor");
    }
    // A real cursor still pages: after the only entry there is nothing;
    // after `0-0`, the first id there is, the entry unless it is `0-0`.
    let after_it = w.get(&format!("/v1/namespaces/orders/dlq?after={id}"));
    assert_eq!((after_it.status, &after_it.body["entries"]), (200, &json!([])), "{:?}", after_it.body);
    let first = w.get("/v1/namespaces/orders/dlq?after=0-0&limit=10");
    assert_eq!(first.status, 200, "{:?}", first.body);
    let listed = first.body["entries"].as_array().expect("entries").len();
    assert_eq!(listed, usize::from(id != "0-0"), "{:?}", first.body);
}

#[test]
fn the_frameworks_own_rejections_are_json_errors_too() {
    let sink = HttpSink::start();
    let w = Wharf::start(&sink.namespace("orders", 1, ""));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let json_of = |mut r: ureq::http::Response<ureq::Body>| {
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let allow = r.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_string);
        (r.status().as_u16(), ct, allow, r.body_mut().read_json::<serde_json::Value>().unwrap_or_default())
    };
    let (status, ct, _, body) = json_of(agent.get(&w.url("/v1/nowhere")).call().expect("GET"));
    assert_eq!(
        (status, ct.as_str(), &body["error"]["code"]),
        (404, "application/json", &json!("route_not_found"))
    );
    let (status, _, allow, body) =
        json_of(agent.delete(&w.url("/v1/namespaces/orders/messages")).call().expect("DELETE"));
    assert_eq!((status, &body["error"]["code"]), (405, &json!("method_not_allowed")), "{body}");
    assert!(allow.is_some_and(|a| a.contains("POST")), "the Allow header stays");
    let huge = vec![b'x'; 8 << 20];
    let r = agent.post(&w.url("/v1/namespaces/orders/messages")).send(&huge[..]);
    if let Ok(r) = r {
        // (The server may also close the connection before reading it all.)
        let (status, _, _, body) = json_of(r);
        assert_eq!((status, &body["error"]["code"]), (413, &json!("body_too_large")), "{body}");
    }
}
