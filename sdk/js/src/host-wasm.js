// The host services in Wasm: the WIT `wharf:target/host` imports.
import { log as hostLog, nowMs as hostNowMs } from "wharf:target/host@0.2.0";

export function log(level, message) {
  hostLog(level, String(message));
}

export function nowMs() {
  return Number(hostNowMs());
}
