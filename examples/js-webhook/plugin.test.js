// Unit tests: the plugin in plain node (no Wasm) against a local server.
// Run: node --test (with node_modules/wharf-sdk linked to sdk/js).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, beforeEach, test } from "node:test";

import { Harness, initError, message } from "wharf-sdk/testing";

import Webhook from "./plugin.js";

let server, url, plugin;
const sink = { status: 200, received: [] };

before(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      sink.received.push({ headers: req.headers, body: JSON.parse(body) });
      res.writeHead(sink.status, { "retry-after": "2", "content-length": "0" }).end();
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  url = `http://127.0.0.1:${server.address().port}/hook`;
});
after(() => server.close());
beforeEach(async () => {
  sink.status = 200;
  sink.received = [];
  plugin = await Harness.init(Webhook, { url });
});

test("an event is wrapped and posted", async () => {
  const msg = message('{"type": "signup", "user": 7}', { key: "user-7" });
  const [outcome] = await plugin.deliver([msg]);
  assert.ok(outcome.isDelivered, outcome.reason);
  assert.deepEqual(sink.received[0].body, { id: msg.id, key: "user-7", type: "signup", data: { user: 7 } });
  assert.equal(sink.received[0].headers["idempotency-key"], msg.id);
});

test("a 503 is retried after the retry-after", async () => {
  sink.status = 503;
  const [outcome] = await plugin.deliver([message("{}")]);
  assert.ok(outcome.isRetry, outcome.reason);
  assert.equal(outcome.afterMs, 2000);
});

test("a 400 and a non-JSON payload are rejected", async () => {
  sink.status = 400;
  const outcomes = await plugin.deliver([message("{}"), message("not json")]);
  assert.deepEqual(outcomes.map((o) => o.kind), ["reject", "reject"]);
  assert.match(outcomes[0].reason, /400/);
  assert.match(outcomes[1].reason, /not JSON/);
});

test("a closed port is a retry", async () => {
  await plugin.reinit({ url: "http://127.0.0.1:9/hook" });
  const [outcome] = await plugin.deliver([message("{}")]);
  assert.ok(outcome.isRetry, outcome.reason);
});

test("init names a missing url", async () => {
  assert.equal(await initError(Webhook, {}), "config key `url` is required but missing");
});
