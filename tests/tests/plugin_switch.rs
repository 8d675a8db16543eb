//! Every order of register, replace, rollback and remove, with messages
//! flowing: delivery always resumes (a write with `wait=visible` is
//! delivered), repeated to catch races. Registering the current digest
//! again changes nothing and keeps the rollback target.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_tests::{HttpSink, Wharf, eventually, plugin, plugin_variant};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn admin(w: &Wharf, method: &str, path: &str, bytes: &[u8]) -> (u16, Value) {
    let url = w.url(&format!("/v1/admin/namespaces/ns/plugin{path}"));
    let a = agent();
    let r = match method {
        "PUT" => a.put(&url).header("content-type", "application/wasm").send(bytes),
        "POST" => a.post(&url).send_empty(),
        _ => a.delete(&url).call(),
    };
    let mut r = r.unwrap_or_else(|e| panic!("admin {method} {path}: {e}\n{}", w.log()));
    (r.status().as_u16(), r.body_mut().read_json().unwrap_or(Value::Null))
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Register(usize),
    Rollback,
    Remove,
    Write,
}

struct Bench {
    w: Wharf,
    plugins: Vec<Vec<u8>>,
    written: usize,
}

impl Bench {
    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            match *step {
                Step::Register(i) => {
                    let (status, body) = admin(&self.w, "PUT", "", &self.plugins[i]);
                    assert_eq!(status, 200, "register: {body}");
                }
                Step::Rollback => {
                    let (status, body) = admin(&self.w, "POST", "/rollback", b"");
                    assert_eq!(status, 200, "rollback: {body}");
                }
                Step::Remove => {
                    let (status, body) = admin(&self.w, "DELETE", "", b"");
                    assert_eq!(status, 200, "remove: {body}");
                }
                Step::Write => {
                    let r = self.w.write("ns", Some(&format!("k{}", self.written % 3)), b"while switching");
                    assert_eq!(r.status, 200, "{:?}", r.body);
                    self.written += 1;
                }
            }
        }
        // Whatever the order, delivery resumes once a plugin is in place.
        self.written += 1;
        let key = format!("k{}", self.written % 3);
        let r = self.w.write_visible("ns", &key, b"after", 20_000);
        assert_eq!(r.status, 200, "after {steps:?}: {:?}\n{}", r.body, self.w.log());
        assert_eq!(r.body["visible"], json!(true), "after {steps:?}: {:?}\n{}", r.body, self.w.log());
    }
}

#[test]
fn delivery_resumes_after_every_order_of_register_replace_rollback_and_remove() {
    use Step::*;
    let sink = HttpSink::start();
    let a = std::fs::read(plugin("http")).expect("http.wasm");
    let plugins = vec![a.clone(), plugin_variant(&a, "wharf-test-b"), plugin_variant(&a, "wharf-test-c")];
    let w = Wharf::start(&sink.namespace("ns", 2, ""));
    let mut bench = Bench { w, plugins, written: 0 };
    let orders: &[&[Step]] = &[
        &[Remove, Write, Register(0)],
        &[Remove, Register(1), Write],
        &[Write, Remove, Write, Register(0)],
        &[Register(1), Write, Rollback],
        &[Remove, Write, Rollback],
        &[Register(2), Remove, Write, Register(2)],
        &[Write, Register(1), Write, Register(2), Write, Rollback, Write],
        &[Remove, Remove, Write, Register(0), Register(0)],
    ];
    for round in 0..4 {
        for order in orders {
            bench.run(order);
        }
        eprintln!("round {round} done");
    }
    let backlog =
        |w: &Wharf| w.partitions("ns").iter().map(|p| p["backlog"].as_u64().unwrap_or(1)).sum::<u64>();
    eventually(Duration::from_secs(30), "everything written delivered", || {
        (backlog(&bench.w) == 0).then_some(())
    });
}

#[test]
fn registering_the_current_digest_again_keeps_the_rollback_target() {
    let sink = HttpSink::start();
    let a = std::fs::read(plugin("http")).expect("http.wasm");
    let b = plugin_variant(&a, "wharf-test-b");
    let w = Wharf::start(&sink.namespace("ns", 1, ""));
    let (_, first) = admin(&w, "PUT", "", &a);
    let (_, second) = admin(&w, "PUT", "", &b);
    let (status, again) = admin(&w, "PUT", "", &b);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["already_current"], json!(true), "{again}");
    assert_eq!(again["digest"], second["digest"]);
    let (status, back) = admin(&w, "POST", "/rollback", b"");
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["digest"], first["digest"], "the rollback target survived the second register");
    let r = w.write_visible("ns", "k", b"x", 20_000);
    assert_eq!(r.body["visible"], json!(true), "{:?}", r.body);
}

#[test]
fn the_first_rollback_goes_back_to_the_config_files_plugin() {
    let sink = HttpSink::start();
    let a = std::fs::read(plugin("http")).expect("http.wasm"); // what the config names
    let b = plugin_variant(&a, "wharf-test-b");
    let w = Wharf::start(&sink.namespace("ns", 1, ""));
    let config_digest = eventually(Duration::from_secs(30), "the config's plugin ready", || {
        w.status()["namespaces"]["ns"]["plugin"]["digest"].as_str().map(str::to_string)
    });
    let (status, registered) = admin(&w, "PUT", "", &b);
    assert_eq!(status, 200, "{registered}");
    assert_ne!(registered["digest"], json!(config_digest));
    let (status, back) = admin(&w, "POST", "/rollback", b"");
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["digest"], json!(config_digest), "back to the plugin the config file names");
    let r = w.write_visible("ns", "k", b"x", 20_000);
    assert_eq!(r.body["visible"], json!(true), "{:?}", r.body);
}
