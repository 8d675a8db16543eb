// Logging to the host's structured log: in Wasm each line goes to the host
// (tagged with the plugin's namespace); natively it is printed to stderr.
import * as host from "./host.js";

const LEVELS = ["trace", "debug", "info", "warn", "error"];

/** Write one line at `level` ("trace" … "error"). */
export function log(level, message) {
  if (!LEVELS.includes(level)) throw new TypeError(`unknown log level ${JSON.stringify(level)}`);
  host.log(level, String(message));
}

export const trace = (m) => log("trace", m);
export const debug = (m) => log("debug", m);
export const info = (m) => log("info", m);
export const warn = (m) => log("warn", m);
export const error = (m) => log("error", m);

/** Wall-clock time in ms since the Unix epoch (the host's clock in Wasm). */
export const nowMs = () => host.nowMs();
