//! Who may call what: the bearer tokens, swapped whole on reload, and the
//! name a caller gets in audit lines.
//!
//! Invariants:
//! - a request is checked against one snapshot of the tokens, so a reload
//!   never lets it see a mix of old and new ones;
//! - a namespace's tokens reach only that namespace; admin tokens reach
//!   everything;
//! - tokens are compared in constant time (`subtle`), whichever config
//!   source (text, file, environment) they came from;
//! - audit lines name a caller by a keyed hash of the token (HMAC-SHA256
//!   with a key in `<data_dir>/audit.key`), which cannot be guessed offline
//!   from the log alone.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::config::Loaded;

/// The configured tokens at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    admin: Vec<String>,
    namespaces: BTreeMap<String, Vec<String>>,
}

impl Tokens {
    pub fn from_config(cfg: &Loaded) -> Self {
        let namespaces = cfg.namespaces.iter().map(|(name, ns)| (name.clone(), ns.tokens.clone())).collect();
        Self { admin: cfg.admin_tokens.clone(), namespaces }
    }

    /// Whether any token is configured (otherwise the API is open).
    fn enabled(&self) -> bool {
        !self.admin.is_empty() || self.namespaces.values().any(|t| !t.is_empty())
    }

    fn grants(&self, token: &str, ns: Option<&str>) -> bool {
        // Every entry is compared, so the time taken does not tell which
        // (or whether an earlier) one matched.
        let matches = |list: &[String]| -> bool {
            list.iter()
                .fold(subtle::Choice::from(0), |acc, t| acc | t.as_bytes().ct_eq(token.as_bytes()))
                .into()
        };
        matches(&self.admin) || ns.and_then(|n| self.namespaces.get(n)).is_some_and(|t| matches(t))
    }
}

/// The answer to "may this caller do this?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Granted,
    /// No `Bearer` token was sent.
    Unauthenticated,
    /// A token was sent, and it does not reach this.
    Forbidden,
}

/// The live tokens and the audit key.
#[derive(Debug)]
pub struct Gate {
    tokens: RwLock<Arc<Tokens>>,
    audit_key: [u8; 32],
}

impl Gate {
    pub fn new(tokens: Tokens, audit_key: [u8; 32]) -> Self {
        Self { tokens: RwLock::new(Arc::new(tokens)), audit_key }
    }

    fn snapshot(&self) -> Arc<Tokens> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks an `Authorization` value for namespace `ns` (`None`: an
    /// admin route).
    pub fn check(&self, authorization: Option<&str>, ns: Option<&str>) -> Verdict {
        let tokens = self.snapshot();
        if !tokens.enabled() {
            return Verdict::Granted;
        }
        match authorization.and_then(bearer) {
            None => Verdict::Unauthenticated,
            Some(t) if tokens.grants(t, ns) => Verdict::Granted,
            Some(_) => Verdict::Forbidden,
        }
    }

    /// Installs `tokens`; true if they differ from the ones in force.
    pub fn replace(&self, tokens: Tokens) -> bool {
        let mut current = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let changed = **current != tokens;
        *current = Arc::new(tokens);
        changed
    }

    /// The audit name of whoever sent `authorization`: `token:<keyed hash>`
    /// or `anonymous`; never the token.
    pub fn actor(&self, authorization: Option<&str>) -> String {
        match authorization {
            Some(v) => {
                let token = bearer(v).unwrap_or(v);
                let mut mac = Hmac::<Sha256>::new_from_slice(&self.audit_key).expect("any key length");
                mac.update(token.as_bytes());
                format!("token:{}", &hex::encode(mac.finalize().into_bytes())[..16])
            }
            None => "anonymous".into(),
        }
    }
}

/// The token of a `Bearer <token>` value; the scheme is case-insensitive
/// (RFC 7235).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(admin: &[&str], ns: &[(&str, &str)]) -> Gate {
        let mut t = Tokens { admin: admin.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        for (n, tok) in ns {
            t.namespaces.entry(n.to_string()).or_default().push(tok.to_string());
        }
        Gate::new(t, [7; 32])
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_tokens_stay_in_their_namespace() {
        let g = gate(&["root"], &[("a", "ta")]);
        assert_eq!(g.check(Some("bearer ta"), Some("a")), Verdict::Granted);
        assert_eq!(g.check(Some("BEARER root"), None), Verdict::Granted);
        assert_eq!(g.check(Some("Bearer ta"), Some("b")), Verdict::Forbidden);
        assert_eq!(g.check(Some("Bearer ta"), None), Verdict::Forbidden);
        assert_eq!(g.check(Some("Basic ta"), Some("a")), Verdict::Unauthenticated);
        assert_eq!(g.check(None, Some("a")), Verdict::Unauthenticated);
        assert_eq!(gate(&[], &[]).check(None, None), Verdict::Granted);
    }

    #[test]
    fn only_a_whole_token_matches() {
        let g = gate(&["first", "root-token"], &[]);
        assert_eq!(g.check(Some("Bearer root-token"), None), Verdict::Granted);
        assert_eq!(g.check(Some("Bearer root"), None), Verdict::Forbidden);
        assert_eq!(g.check(Some("Bearer root-token-and-more"), None), Verdict::Forbidden);
    }

    #[test]
    fn a_replace_swaps_every_token_at_once() {
        let g = gate(&["old"], &[]);
        let new = Tokens { admin: vec!["new".into()], ..Default::default() };
        assert!(g.replace(new.clone()));
        assert_eq!(g.check(Some("Bearer old"), None), Verdict::Forbidden);
        assert_eq!(g.check(Some("Bearer new"), None), Verdict::Granted);
        assert!(!g.replace(new), "the same tokens again are no change");
    }

    #[test]
    fn the_audit_name_is_keyed() {
        let (a, b) = (gate(&[], &[]), Gate::new(Tokens::default(), [8; 32]));
        assert_eq!(a.actor(Some("Bearer t")), a.actor(Some("bearer t")));
        assert_ne!(a.actor(Some("Bearer t")), b.actor(Some("Bearer t")));
        assert!(
            !a.actor(Some("Bearer t")).contains(&hex::encode(<Sha256 as sha2::Digest>::digest(b"t"))[..12])
        );
    }
}
