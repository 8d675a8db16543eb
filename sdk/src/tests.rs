#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::testing::{self, Harness};
use crate::{Batch, Config, Error, Message, Outcome, PluginInfo, Target};

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
