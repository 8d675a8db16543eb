//! Secrets out of what a plugin reports.
//!
//! Reasons and log lines end up in `/v1/status`, dead-letter entries and the
//! host's log, so they must not carry the secrets of a plugin's config: a
//! password, a token, or a URL's `user:password@` and `?api_key=…`. The host
//! scrubs the secrets it finds in the config out of everything a plugin
//! reports; these helpers keep them out in the first place.

const MASK: &str = "***";

/// `url` with its secrets masked, for a log line or an error reason; the
/// scheme, host, port and path stay, so the operator still sees where it
/// went.
///
/// - The userinfo (`user:password@`, `user@`) becomes `***@`. It is what
///   precedes the last `@` before the first `/` or `?` after `://`.
/// - Each query value becomes `***`: `?api_key=abc&x=1` becomes
///   `?api_key=***&x=***`; a part without `=` becomes `***`.
/// - The fragment (`#…`) is dropped.
///
/// Input that does not start with `scheme://` is masked anyway: everything
/// up to the last `@` before the first `?` becomes `***`, and query values
/// after the `?` are masked as above (a `#` is kept there).
///
/// ```
/// use wharf_sdk::redact_url;
/// assert_eq!(
///     redact_url("https://bob:hunter2@hooks.example.com/in?api_key=abc&x=1#top"),
///     "https://***@hooks.example.com/in?api_key=***&x=***"
/// );
/// assert_eq!(redact_url("bob:hunter2@10.0.0.7:11211"), "***@10.0.0.7:11211");
/// ```
pub fn redact_url(url: &str) -> String {
    let scheme = url.find("://").filter(|&i| is_scheme(&url[..i])).map_or("", |i| &url[..i + 3]);
    let is_url = !scheme.is_empty();
    let rest = &url[scheme.len()..];
    // The authority does not end at a `#`, so that a `#` in a password is
    // masked with the rest of it.
    let end = if is_url { rest.find(['/', '?']) } else { rest.find('?') };
    let (authority, mut tail) = rest.split_at(end.unwrap_or(rest.len()));
    let mut authority = match authority.rfind('@') {
        Some(at) => format!("{MASK}{}", &authority[at..]),
        None => authority.to_string(),
    };
    if is_url {
        if let Some(hash) = authority.find('#') {
            authority.truncate(hash);
            tail = "";
        }
        tail = tail.split('#').next().unwrap_or("");
    }
    let mut out = format!("{scheme}{authority}");
    match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query.split('&').map(mask_query_part).collect();
            out.push_str(&format!("{path}?{}", query.join("&")));
        }
        None => out.push_str(tail),
    }
    out
}

/// `name=value` → `name=***`; a lone `value` → `***`; empty stays empty.
fn mask_query_part(part: &str) -> String {
    match part.split_once('=') {
        Some((name, _)) => format!("{name}={MASK}"),
        None if part.is_empty() => String::new(),
        None => MASK.to_string(),
    }
}

/// A URL scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

/// Whether a config key names a secret, by the convention the host also
/// uses: its name ends in `password`, `passwd`, `token`, `tokens`,
/// `secret`, `key` (so `api_key`, `apikey`) or `credentials`, in any case.
/// Never put the value of such a key in a reason or a log line.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "token", "tokens", "secret", "key", "credentials"].iter().any(|s| key.ends_with(s))
}
