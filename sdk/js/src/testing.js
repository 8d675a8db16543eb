// Native test helpers: build messages and drive a `Target` through `init`
// and `deliver` exactly as the host would, through the same glue as the
// Wasm entry. Plain node, no Wasm.
//
//   const plugin = await Harness.init(Webhook, { url });
//   const [outcome] = await plugin.deliver([message('{"a":1}', { key: "k" })]);
//   assert.ok(outcome.isDelivered, outcome.reason);
import { Config } from "./config.js";
import { nowMs } from "./log.js";
import { Runner } from "./runner.js";
import { Message } from "./types.js";

let next = 1;

/** `init` failed; `reason` is what the operator would see. */
export class InitError extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

/** A message with this payload: id "0-<n>" with a fresh sequence number,
 * namespace "test", first attempt, written now; `fields` override. */
export function message(payload, fields = {}) {
  const sequence = next++;
  return new Message({ id: `0-${sequence}`, namespace: "test", sequence, writtenAtMs: nowMs(), payload, ...fields });
}

export function config(entries = {}) {
  return new Config(entries);
}

export class Harness {
  constructor(cls) {
    this.runner = new Runner(cls);
  }

  /** A harness after `init` with this config; throws `InitError` if it fails. */
  static async init(cls, entries = {}) {
    const h = new Harness(cls);
    await h.reinit(entries);
    return h;
  }

  /** A harness whose `init` has not run: `deliver` retries everything. */
  static uninitialised(cls) {
    return new Harness(cls);
  }

  async reinit(entries = {}) {
    const reason = await this.runner.init(config(entries));
    if (reason !== undefined) throw new InitError(reason);
  }

  /** Deliver these messages as one batch; exactly one outcome each. */
  async deliver(messages, transactionId) {
    const outcomes = await this.runner.deliver({ messages, transactionId });
    if (outcomes.length !== messages.length) throw new Error("exactly one outcome per message");
    return outcomes;
  }

  describe() {
    return this.runner.describe();
  }

  get plugin() {
    return this.runner.instance;
  }
}

/** The reason `init` fails with this config (throws if it succeeds). */
export async function initError(cls, entries = {}) {
  try {
    await Harness.init(cls, entries);
  } catch (e) {
    if (e instanceof InitError) return e.reason;
    throw e;
  }
  throw new Error(`${cls.name}.init succeeded with ${JSON.stringify(entries)}`);
}
