// The JavaScript SDK natively: config wording (same as sdk/src/config.rs),
// and the runner's guarantees (one outcome per message, whatever the plugin
// does). Run from sdk/js: node --test test/
import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, Message, Reject, Retry, Target, http, isSecretKey, redactUrl } from "../src/index.js";
import { Harness, InitError, initError, message } from "../src/testing.js";

test("config errors name the key like the Rust SDK", () => {
  const c = new Config([["n", "abc"], ["blank", "  "], ["flag", "yes"], ["n2", " 7 "]]);
  const wording = (f) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof Reject);
      return e.reason;
    }
    assert.fail("no error");
  };
  assert.equal(wording(() => c.require("missing")), "config key `missing` is required but missing");
  assert.equal(wording(() => c.require("blank")), "config key `blank` is required but empty");
  assert.equal(wording(() => c.parse("n", "int")), 'config key `n`: cannot parse "abc" as int: invalid digit found in string');
  assert.equal(
    wording(() => c.parse("flag", "bool")),
    'config key `flag`: cannot parse "yes" as bool: provided string was not `true` or `false`',
  );
  assert.equal(c.parse("n2", "int"), 7);
  assert.equal(c.parseOr("absent", "int", 5), 5);
  assert.equal(new Config([["k", "1"], ["k", "2"]]).get("k"), "2");
  assert.equal(new Config({ a: "b" }).getOr("x", "d"), "d");
});

class Flaky extends Target {
  init(config) {
    this.mode = config.require("mode");
  }
  async deliverOne(msg) {
    const text = msg.text();
    if (text === "retry") throw new Retry("later", { afterMs: 250 });
    if (text === "reject") throw new Reject("never");
    if (text === "bug") throw new TypeError("oops");
  }
}

class Short extends Target {
  deliver() {
    return [undefined];
  }
}

test("every kind of failure is an outcome", async () => {
  const plugin = await Harness.init(Flaky, { mode: "x" });
  const got = await plugin.deliver(["ok", "retry", "reject", "bug"].map((p) => message(p)));
  assert.deepEqual(got.map((o) => o.kind), ["delivered", "retry", "reject", "retry"]);
  assert.equal(got[1].afterMs, 250);
  assert.match(got[3].reason, /TypeError: oops/);
});

test("a wrong count is padded with retries", async () => {
  const got = await (await Harness.init(Short)).deliver([message("a"), message("b")]);
  assert.deepEqual(got.map((o) => o.kind), ["delivered", "retry"]);
});

test("before init everything is retried, and init errors are the reason", async () => {
  const got = await Harness.uninitialised(Flaky).deliver([message("a")]);
  assert.equal(got[0].kind, "retry");
  assert.equal(await initError(Flaky, {}), "config key `mode` is required but missing");
  await assert.rejects(Harness.init(Flaky), InitError);
});

test("messages: case-insensitive headers, dedup key, describe default", () => {
  const m = new Message({ id: "0-1", payload: new Uint8Array([0xff]), headers: [["X-A", "1"]], idempotencyKey: "idem" });
  assert.equal(m.header("x-a"), "1");
  assert.equal(m.dedupKey(), "idem");
  assert.equal(m.text(), "\ufffd");
  assert.deepEqual(Flaky.describe(), { name: "Flaky", version: "0.1.0" });
});

// The same cases as the Rust SDK's (sdk/src/tests.rs) and the Python SDK's.
const REDACT_CASES = [
  ["http://bob:hunter2@h:8080/hook?api_key=abc&x=1#top", "http://***@h:8080/hook?api_key=***&x=***"],
  ["http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"],
  ["https://hooks.example.com", "https://hooks.example.com"],
  ["http://[::1]:8080/p", "http://[::1]:8080/p"],
  ["http://h/p?", "http://h/p?"],
  ["http://h/p#frag", "http://h/p"],
  ["http://h#frag/x?y=1", "http://h"],
  ["", ""],
  ["not a url", "not a url"],
  ["127.0.0.1:11211", "127.0.0.1:11211"],
  ["http://bob@h/", "http://***@h/"],
  ["http://u:p@[::1]:8080/", "http://***@[::1]:8080/"],
  ["HTTPS://u:p@ss@h/x", "HTTPS://***@h/x"],
  ["http://u:p#1@h/x", "http://***@h/x"],
  ["https://h/a/@alice", "https://h/a/@alice"],
  ["http://h/?to=a@b.c&flag&&k=", "http://h/?to=***&***&&k=***"],
  ["http://h?token=abc", "http://h?token=***"],
  ["bob:hunter2@10.0.0.7:11211", "***@10.0.0.7:11211"],
  ["u:p#1@h", "***@h"],
  ["localhost:80/hook?api_key=abc", "localhost:80/hook?api_key=***"],
  ["http:/u:p@h/x", "***@h/x"],
  ["1http://u:p@h/", "***@h/"],
];

test("redactUrl masks userinfo and query values and drops the fragment", () => {
  for (const [url, want] of REDACT_CASES) assert.equal(redactUrl(url), want, url);
});

test("secret keys are named so and their values are not echoed", () => {
  for (const key of ["password", "DB_PASSWORD", "token", "api_key", "apiKey", "client_secret", "key", "credentials"]) {
    assert.ok(isSecretKey(key), key);
  }
  for (const key of ["url", "username", "key_prefix", "keyspace", "timeout_ms", "tokenizer"]) {
    assert.ok(!isSecretKey(key), key);
  }
  const c = new Config([["api_key", "hunter2"], ["retries", "http://bob:pw@h/?q=zz"]]);
  const quoting = (s) => {
    throw new Error(`no good: ${s}`);
  };
  assert.throws(() => c.parse("api_key", "int"), (e) => e.reason.includes("`api_key`") && !e.reason.includes("hunter2"));
  assert.throws(() => c.parse("api_key", quoting), (e) => !e.reason.includes("hunter2"));
  assert.throws(
    () => c.parse("retries", quoting),
    (e) => e.reason === 'config key `retries`: cannot parse "http://***@h/?q=***" as quoting: no good: http://***@h/?q=***',
  );
});

test("http errors name the URL without its secrets", async () => {
  await assert.rejects(http.get("ftp://bob:hunter2@h/?api_key=abc"), (e) => e.message === 'invalid URL "ftp://***@h/?api_key=***": must start with http:// or https://');
  await assert.rejects(http.get("http://bob:hunter2@127.0.0.1:1/x?api_key=abc"), (e) => {
    assert.ok(e instanceof Retry && e.reason.startsWith("GET http://***@127.0.0.1:1/x?api_key=*** failed: "), e.reason);
    assert.ok(!e.reason.includes("hunter2") && !e.reason.includes("abc"), e.reason);
    return true;
  });
});
