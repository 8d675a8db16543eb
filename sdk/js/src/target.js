// The `Target` base class.
import { deliverOneOutcome } from "./runner.js";

/**
 * A delivery target: extend it and make it your plugin module's default
 * export. The host creates one object per plugin instance (no arguments),
 * calls `init(config)` once, then `deliver(batch)` with batches, one at a
 * time. Methods may be `async` (use `await http.post(...)`).
 *
 * Set `static name`/`static version` to say what the plugin is (`wharf
 * plugin check` prints them); the name defaults to the class name.
 */
export class Target {
  static version = "0.1.0";

  /** Set up from the namespace's `target.config` (a `Config`). Throwing
   * stops the plugin from loading; the reason is shown to the operator. */
  init(_config) {}

  /** Deliver one message. Returning means the target has it; throw
   * `Retry` or `Reject` if not (any other error is a retry). */
  deliverOne(_msg) {
    throw new Error("a Target must define deliverOne (or deliver)");
  }

  /** Deliver a batch: exactly one result per message, in order. Each is
   * `undefined` (delivered), a `Retry` or a `Reject` (not thrown), or an
   * `Outcome`. The default calls `deliverOne` for each message in turn;
   * override it to pipeline or batch requests. */
  async deliver(batch) {
    const out = [];
    for (const msg of batch.messages) out.push(await deliverOneOutcome(this, msg));
    return out;
  }

  /** What this plugin is. Called without `init`: no config, no network. */
  static describe() {
    return { name: this.pluginName ?? this.name, version: this.version };
  }
}
