// The Wasm entry glue: a plugin class as the WIT exports `init`, `deliver`
// and `describe`. build.mjs generates the entry module that uses it; plugin
// authors never import it.
import { Config } from "./config.js";
import { Runner } from "./runner.js";
import { Message } from "./types.js";

export function wasmExports(cls) {
  const runner = new Runner(cls);
  return {
    async init(config) {
      const reason = await runner.init(new Config(config));
      if (reason !== undefined) throw reason;
    },
    async deliver(batch) {
      const messages = batch.messages.map(
        (m) =>
          new Message({
            ...m,
            sequence: Number(m.sequence),
            writtenAtMs: Number(m.writtenAtMs),
          }),
      );
      const outcomes = await runner.deliver({ messages, transactionId: batch.transactionId });
      return outcomes.map((o) => {
        if (o.kind === "delivered") return { tag: "delivered" };
        if (o.kind === "reject") return { tag: "reject", val: o.reason ?? "" };
        return { tag: "retry", val: { reason: o.reason ?? "", afterMs: o.afterMs == null ? undefined : BigInt(o.afterMs) } };
      });
    },
    describe() {
      const info = runner.describe();
      return { name: String(info.name), version: String(info.version) };
    },
  };
}
