#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::testing::{self, Harness};
use crate::{Batch, Config, Error, Message, Outcome, PluginInfo, Reconciled, Target};

#[test]
fn config_get_require_parse() {
    let c = testing::config(&[("servers", "a:1,b:2"), ("ttl_seconds", "60"), ("blank", "  "), ("bad", "x1")]);
    assert_eq!(c.get("servers"), Some("a:1,b:2"));
    assert_eq!(c.get("nope"), None);
    assert_eq!(c.get_or("nope", "dflt"), "dflt");
    assert_eq!(c.require("servers").unwrap(), "a:1,b:2");

    let missing = c.require("url").unwrap_err();
    assert!(missing.reason().contains("`url`") && missing.reason().contains("missing"), "{missing}");
    let blank = c.require("blank").unwrap_err();
    assert!(blank.reason().contains("`blank`") && blank.reason().contains("empty"), "{blank}");

    assert_eq!(c.parse::<u32>("ttl_seconds").unwrap(), 60);
    assert_eq!(c.parse_or::<u32>("timeout_ms", 5000).unwrap(), 5000);
    assert_eq!(c.parse_opt::<u32>("timeout_ms").unwrap(), None);
    let bad = c.parse::<u32>("bad").unwrap_err();
    assert!(
        bad.reason().contains("`bad`") && bad.reason().contains("\"x1\"") && bad.reason().contains("u32"),
        "{bad}"
    );
    let bad = c.parse_or::<u16>("ttl_seconds", 1).map(|_| ());
    assert!(bad.is_ok());
    let too_big = testing::config(&[("port", "70000")]).parse::<u16>("port").unwrap_err();
    assert!(too_big.reason().contains("too large"), "{too_big}");
}

#[test]
fn config_last_value_wins_and_iter_keeps_order() {
    let c: Config = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
    assert_eq!(c.get("a"), Some("3"));
    assert_eq!(c.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b", "a"]);
}

#[test]
fn error_to_outcome() {
    assert_eq!(Outcome::from(Error::retry("busy")), Outcome::Retry { reason: "busy".into(), after: None });
    assert_eq!(
        Outcome::from(Error::retry("busy").after(Duration::from_secs(3))),
        Outcome::Retry { reason: "busy".into(), after: Some(Duration::from_secs(3)) }
    );
    assert_eq!(Outcome::from(Error::reject("bad")), Outcome::Reject { reason: "bad".into() });
    // `after` does not turn a reject into a retry.
    assert_eq!(Outcome::from(Error::reject("bad").after(Duration::from_secs(1))), Outcome::reject("bad"));
    assert_eq!(Outcome::from(Ok::<(), Error>(())), Outcome::Delivered);
    assert_eq!(Error::retry("x").context("connect a:1").reason(), "connect a:1: x");
}

#[test]
fn io_errors_are_retries() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nobody home");
    let err = Error::from(io);
    assert!(err.is_retry());
    assert!(err.reason().contains("nobody home"), "{err}");
    assert!(err.reason().contains("refused"), "{err}");

    fn uses_question_mark() -> Result<(), Error> {
        std::net::TcpStream::connect("127.0.0.1:1")?;
        Ok(())
    }
    let err = uses_question_mark().unwrap_err();
    assert!(err.is_retry(), "{err}");
}

struct Counting {
    seen: Vec<String>,
}

impl Target for Counting {
    fn init(config: Config) -> Result<Self, Error> {
        config.require("must")?;
        Ok(Counting { seen: Vec::new() })
    }

    fn deliver_one(&mut self, msg: &Message) -> Result<(), Error> {
        self.seen.push(msg.id.clone());
        match msg.payload.as_slice() {
            b"retry" => Err(Error::retry("later").after(Duration::from_millis(250))),
            b"reject" => Err(Error::reject("never")),
            _ => Ok(()),
        }
    }
}

#[test]
fn default_deliver_maps_deliver_one_in_order() {
    let mut h = Harness::<Counting>::init(&[("must", "yes")]).unwrap();
    let msgs = vec![
        testing::message("ok"),
        testing::message("retry"),
        testing::message("reject"),
        testing::message("ok"),
    ];
    let ids: Vec<String> = msgs.iter().map(|m| m.id.clone()).collect();
    let outcomes = h.deliver(msgs);
    assert_eq!(
        outcomes,
        vec![
            Outcome::Delivered,
            Outcome::Retry { reason: "later".into(), after: Some(Duration::from_millis(250)) },
            Outcome::reject("never"),
            Outcome::Delivered,
        ]
    );
    assert_eq!(h.plugin().unwrap().seen, ids);
    assert!(h.deliver(vec![]).is_empty());
}

#[test]
fn deliver_before_init_retries_everything() {
    let mut h = Harness::<Counting>::uninitialised();
    let outcomes = h.deliver(vec![testing::message("a"), testing::message("b")]);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(Outcome::is_retry), "{outcomes:?}");

    // A failed init leaves the plugin uninitialised, with the reason.
    let err = h.reinit(&[]).unwrap_err();
    assert!(err.contains("`must`"), "{err}");
    assert!(h.deliver(vec![testing::message("a")])[0].is_retry());
    assert!(Harness::<Counting>::init(&[]).is_err());
}

/// Repairs what it was told was half done, up to the budget in units.
struct Repairing {
    half_done: Vec<String>,
}

impl Target for Repairing {
    fn init(config: Config) -> Result<Self, Error> {
        Ok(Repairing { half_done: config.get_or("half_done", "").split(',').map(str::to_string).collect() })
    }
    fn deliver_one(&mut self, _: &Message) -> Result<(), Error> {
        Ok(())
    }
    fn reconcile(&mut self, budget_ms: u64) -> Reconciled {
        let take = (budget_ms as usize).min(self.half_done.len());
        let mut done = Reconciled::default();
        for item in self.half_done.drain(..take) {
            match item.strip_prefix("bad:") {
                Some(why) => done.errors.push(why.to_string()),
                None => done.repaired += 1,
            }
        }
        done
    }
}

#[test]
fn reconcile_runs_the_plugins_pass_and_defaults_to_nothing() {
    let mut h = Harness::<Repairing>::init(&[("half_done", "a,bad:gone,c")]).unwrap();
    assert_eq!(h.reconcile(2), Reconciled { repaired: 1, errors: vec!["gone".into()] });
    assert_eq!(h.reconcile(10), Reconciled { repaired: 1, errors: vec![] });
    assert_eq!(h.reconcile(10), Reconciled::default());

    // The default repairs nothing and reports nothing.
    let mut h = Harness::<Counting>::init(&[("must", "yes")]).unwrap();
    assert_eq!(h.reconcile(1000), Reconciled::default());
}

#[test]
fn reconcile_before_init_is_an_error_not_a_panic() {
    let mut h = Harness::<Repairing>::uninitialised();
    let done = h.reconcile(1000);
    assert_eq!(done.repaired, 0);
    assert_eq!(done.errors.len(), 1);
    assert!(done.errors[0].contains("not initialised"), "{done:?}");
}

struct Miscounting(usize);

impl Target for Miscounting {
    fn init(config: Config) -> Result<Self, Error> {
        Ok(Miscounting(config.parse("n")?))
    }
    fn deliver_one(&mut self, _: &Message) -> Result<(), Error> {
        Ok(())
    }
    fn deliver(&mut self, _: &Batch) -> Vec<Outcome> {
        vec![Outcome::Delivered; self.0]
    }
}

#[test]
fn wrong_outcome_count_is_fixed_up() {
    let mut h = Harness::<Miscounting>::init(&[("n", "1")]).unwrap();
    let outcomes = h.deliver(vec![testing::message("a"), testing::message("b"), testing::message("c")]);
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(outcomes[1].is_retry() && outcomes[2].is_retry());

    let mut h = Harness::<Miscounting>::init(&[("n", "5")]).unwrap();
    assert_eq!(h.deliver(vec![testing::message("a")]), vec![Outcome::Delivered]);
}

#[test]
fn message_helpers() {
    let m = testing::message("p").with_key("k").with_header("Content-Type", "text/plain");
    assert_eq!(m.key.as_deref(), Some("k"));
    assert_eq!(m.header("content-type"), Some("text/plain"));
    assert_eq!(m.dedup_key(), m.id);
    let m = m.with_idempotency_key("idem");
    assert_eq!(m.dedup_key(), "idem");
    assert_eq!(m.payload_lossy(), "p");
    assert_ne!(testing::message("a").id, testing::message("a").id);
    assert!(crate::now_ms() > 1_600_000_000_000);
}

crate::export_target!(Counting);

struct Described;

impl Target for Described {
    fn init(_: Config) -> Result<Self, Error> {
        Ok(Described)
    }
    fn deliver_one(&mut self, _: &Message) -> Result<(), Error> {
        Ok(())
    }
    fn describe() -> Option<PluginInfo> {
        Some(PluginInfo::new("acme-sink", "2.1.0"))
    }
}

#[test]
fn describe_is_the_crate_unless_the_plugin_says_otherwise() {
    use crate::__private::describe;
    assert_eq!(describe::<Counting>("my-target", "0.3.0"), PluginInfo::new("my-target", "0.3.0"));
    assert_eq!(describe::<Described>("my-target", "0.3.0"), PluginInfo::new("acme-sink", "2.1.0"));
}

#[test]
fn a_test_message_has_no_replays_unless_set() {
    let m = testing::message("p");
    assert_eq!(m.replays, 0);
    assert_eq!(m.with_replays(2).replays, 2);
}

#[test]
fn redact_url_masks_userinfo_and_query_values_and_drops_the_fragment() {
    use crate::redact_url;
    let cases = [
        ("http://bob:hunter2@h:8080/hook?api_key=abc&x=1#top", "http://***@h:8080/hook?api_key=***&x=***"),
        // Near misses: nothing secret, so nothing changes.
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("https://hooks.example.com", "https://hooks.example.com"),
        ("http://[::1]:8080/p", "http://[::1]:8080/p"),
        ("http://h/p?", "http://h/p?"),
        ("http://h/p#frag", "http://h/p"),
        ("http://h#frag/x?y=1", "http://h"),
        ("", ""),
        ("not a url", "not a url"),
        ("127.0.0.1:11211", "127.0.0.1:11211"),
        // A user alone, IPv6, odd passwords (an `@` or `#` in them).
        ("http://bob@h/", "http://***@h/"),
        ("http://u:p@[::1]:8080/", "http://***@[::1]:8080/"),
        ("HTTPS://u:p@ss@h/x", "HTTPS://***@h/x"),
        ("http://u:p#1@h/x", "http://***@h/x"),
        // A host that is not a URL's, and an `@` or `=` later in the query.
        ("https://h/a/@alice", "https://h/a/@alice"),
        ("http://h/?to=a@b.c&flag&&k=", "http://h/?to=***&***&&k=***"),
        ("http://h?token=abc", "http://h?token=***"),
        // Not `scheme://`: masked anyway.
        ("bob:hunter2@10.0.0.7:11211", "***@10.0.0.7:11211"),
        ("u:p#1@h", "***@h"),
        ("localhost:80/hook?api_key=abc", "localhost:80/hook?api_key=***"),
        ("http:/u:p@h/x", "***@h/x"),
        ("1http://u:p@h/", "***@h/"),
    ];
    for (url, want) in cases {
        assert_eq!(redact_url(url), want, "{url}");
    }
}

#[test]
fn secret_keys_are_named_so_and_their_values_are_not_echoed() {
    use crate::is_secret_key;
    for key in
        ["password", "DB_PASSWORD", "token", "api_key", "apiKey", "client_secret", "key", "credentials"]
    {
        assert!(is_secret_key(key), "{key}");
    }
    for key in ["url", "username", "key_prefix", "keyspace", "timeout_ms", "tokenizer"] {
        assert!(!is_secret_key(key), "{key}");
    }

    let c = testing::config(&[("api_key", "hunter2"), ("retries", "http://bob:pw@h/?q=zz")]);
    let err = c.parse::<u32>("api_key").unwrap_err();
    assert!(err.reason().contains("`api_key`") && !err.reason().contains("hunter2"), "{err}");
    let err = c.parse::<u32>("retries").unwrap_err();
    assert!(err.reason().contains("http://***@h/?q=***"), "{err}");
    assert!(!err.reason().contains("pw") && !err.reason().contains("zz"), "{err}");

    // A parse error that quotes the value is redacted too.
    #[derive(Debug)]
    struct Quoting;
    impl std::str::FromStr for Quoting {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            Err(format!("no good: {s}"))
        }
    }
    let err = c.parse::<Quoting>("retries").unwrap_err();
    assert!(err.reason().ends_with("no good: http://***@h/?q=***"), "{err}");
    assert!(c.parse::<Quoting>("api_key").unwrap_err().reason().contains("not shown"));
}
