// Unit tests, in plain node (no Wasm): `make test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Harness, message } from "wharf-sdk/testing";

import {{class}} from "./plugin.js";

test("delivers a message and rejects an empty one", async () => {
  const plugin = await Harness.init({{class}}, { prefix: "test" });
  const outcomes = await plugin.deliver([message("hello", { key: "k" }), message("")]);
  assert.deepEqual(outcomes.map((o) => o.kind), ["delivered", "reject"]);
});
