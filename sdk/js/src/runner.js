// The glue between the WIT exports and a `Target`, used by the Wasm entry
// (`wasm.js`) and by `testing.js`, so both run the same code. Whatever the
// plugin does: exactly one outcome per message; before a successful `init`
// every message is retried; an unexpected error is a retry naming it (and
// logged with its stack), never a trap.
import { Config } from "./config.js";
import { Reject, Retry, WharfError } from "./errors.js";
import * as log from "./log.js";
import { Outcome } from "./types.js";

function unexpected(what, e) {
  log.error(`${what}: ${e?.stack ?? e}`);
  if (e instanceof Error) return e.message ? `${e.name}: ${e.message}` : e.name;
  return String(e);
}

export function toOutcome(value) {
  if (value === undefined || value === null) return Outcome.delivered();
  if (value instanceof Outcome) return value;
  if (value instanceof Retry) return Outcome.retry(value.reason, value.afterMs);
  if (value instanceof Reject) return Outcome.reject(value.reason);
  if (value instanceof WharfError) return Outcome.retry(value.reason);
  return Outcome.retry(`plugin bug: deliver returned ${JSON.stringify(value)}, not an outcome`);
}

export async function deliverOneOutcome(target, msg) {
  try {
    await target.deliverOne(msg);
    return Outcome.delivered();
  } catch (e) {
    if (e instanceof WharfError) return toOutcome(e);
    return Outcome.retry(unexpected(`deliverOne(${msg.id}) threw`, e));
  }
}

export class Runner {
  constructor(cls) {
    this.cls = cls;
    this.instance = undefined;
  }

  /** Run `init`; `undefined` on success, else the operator-facing reason. */
  async init(config) {
    this.instance = undefined;
    try {
      const instance = new this.cls();
      await instance.init(config instanceof Config ? config : new Config(config));
      this.instance = instance;
      return undefined;
    } catch (e) {
      if (e instanceof WharfError) return e.reason;
      return unexpected("init threw", e);
    }
  }

  /** One `Outcome` per message of `batch` ({messages, transactionId}). */
  async deliver(batch) {
    const expected = batch.messages.length;
    if (!this.instance) {
      return batch.messages.map(() => Outcome.retry("plugin is not initialised (init has not succeeded)"));
    }
    let results;
    try {
      results = [...(await this.instance.deliver(batch))];
    } catch (e) {
      const reason = unexpected("deliver threw", e);
      return batch.messages.map(() => Outcome.retry(reason));
    }
    let outcomes = results.map(toOutcome);
    if (outcomes.length !== expected) {
      log.error(
        `plugin bug: deliver returned ${outcomes.length} outcomes for ${expected} messages; ` +
          "retrying the ones without an outcome",
      );
      outcomes = outcomes.slice(0, expected);
      while (outcomes.length < expected) outcomes.push(Outcome.retry("plugin returned no outcome for this message"));
    }
    return outcomes;
  }

  describe() {
    return this.cls.describe();
  }
}
