//! Secrets out of what a plugin reports.
//!
//! A plugin's config may hold secrets: a password, a token, a URL with
//! `user:password@` or `?api_key=…`. Whatever the plugin says back (outcome
//! reasons, `init` errors, log lines, the stderr tail of a trap) ends up in
//! status, DLQ entries and the host's log, so the host scrubs those secrets
//! out itself rather than trusting every plugin to.
//!
//! What counts as secret:
//! - the value of a config key whose name says so ([`is_secret_key`]);
//! - in any config value that is a URL: its userinfo, its query string and
//!   each query value.
//!
//! Each occurrence is replaced by `***`. Values shorter than
//! [`MIN_SECRET_LEN`] are left alone: scrubbing `1` everywhere would hide
//! more than it protects.

/// Shorter values are not scrubbed.
pub const MIN_SECRET_LEN: usize = 3;

const MASK: &str = "***";

/// Whether a config key names a secret: it ends in `password`, `passwd`,
/// `token`, `secret`, `key` (also `api_key`, `apikey`) or `credentials`,
/// in any case.
pub fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "token", "tokens", "secret", "key", "apikey", "credentials"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// The secret strings of one plugin's config.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Longest first, so that a secret containing another goes whole.
    needles: Vec<String>,
}

impl Secrets {
    pub fn from_config(config: &[(String, String)]) -> Self {
        let mut needles = Vec::new();
        for (key, value) in config {
            if is_secret_key(key) {
                needles.push(value.clone());
            }
            needles.extend(url_secrets(value));
        }
        needles.retain(|n| n.len() >= MIN_SECRET_LEN);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        self.needles.iter().fold(text.to_string(), |t, n| t.replace(n.as_str(), MASK))
    }
}

impl Secrets {
    /// An outcome with its reason scrubbed.
    pub fn scrub_outcome(&self, outcome: super::Outcome) -> super::Outcome {
        use super::Outcome;
        if self.needles.is_empty() {
            return outcome;
        }
        match outcome {
            Outcome::Delivered => Outcome::Delivered,
            Outcome::Retry(r) => Outcome::Retry(super::RetryOutcome { reason: self.scrub(&r.reason), ..r }),
            Outcome::Reject(reason) => Outcome::Reject(self.scrub(&reason)),
            Outcome::Halt(reason) => Outcome::Halt(self.scrub(&reason)),
        }
    }

    /// A call's error with what the plugin said in it scrubbed.
    pub fn scrub_error(&self, e: super::PluginError) -> super::PluginError {
        use super::PluginError;
        match e {
            PluginError::Init(m) => PluginError::Init(self.scrub(&m)),
            PluginError::Trap(m) => PluginError::Trap(self.scrub(&m)),
            other => other,
        }
    }
}

/// A URL's userinfo, query string and query values, if it has any.
fn url_secrets(value: &str) -> Vec<String> {
    let Some((_, rest)) = value.split_once("://") else { return Vec::new() };
    let mut out = Vec::new();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        out.push(userinfo.to_string());
        out.extend(userinfo.split_once(':').map(|(_, pw)| pw.to_string()));
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or("");
        out.push(query.to_string());
        out.extend(query.split('&').filter_map(|kv| kv.split_once('=')).map(|(_, v)| v.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        let config: Vec<_> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Secrets::from_config(&config)
    }

    #[test]
    fn url_userinfo_and_query_are_scrubbed() {
        let s = secrets(&[("url", "http://bob:hunter2@h:8080/hook?api_key=abc123&x=1")]);
        let said = "POST http://bob:hunter2@h:8080/hook?api_key=abc123&x=1 failed; key abc123";
        assert_eq!(s.scrub(said), "POST http://***@h:8080/hook?*** failed; key ***");
    }

    #[test]
    fn values_of_secret_keys_are_scrubbed_wherever_they_appear() {
        let s = secrets(&[("password", "s3cret-pw"), ("API_KEY", "k-42"), ("table", "orders")]);
        assert_eq!(
            s.scrub("auth failed for s3cret-pw (k-42) on orders"),
            "auth failed for *** (***) on orders"
        );
    }

    #[test]
    fn plain_values_and_short_secrets_stay() {
        let s = secrets(&[("url", "http://h/hook"), ("token", "ab"), ("timeout_ms", "500")]);
        assert_eq!(s.scrub("POST http://h/hook ab 500"), "POST http://h/hook ab 500");
        assert!(is_secret_key("admin_tokens") && is_secret_key("db_password") && !is_secret_key("keyspace"));
    }
}
