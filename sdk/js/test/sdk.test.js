// The JavaScript SDK natively: config wording (same as sdk/src/config.rs),
// and the runner's guarantees (one outcome per message, whatever the plugin
// does). Run from sdk/js: node --test test/
import assert from "node:assert/strict";
import { test } from "node:test";

import { Config, Message, Reject, Retry, Target } from "../src/index.js";
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
