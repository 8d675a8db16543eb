// wharf-sdk: write Wharf delivery targets in JavaScript.
//
// A plugin is a module whose default export extends `Target`; build it with
// `node <sdk>/js/build.mjs plugin.js -o plugin.wasm` (componentize-js).
// Natively (node, unit tests) the same code runs without Wasm:
// `wharf-sdk/testing` drives a plugin class as the host would.
// Reasons and log lines reach the operator: put a URL in them through
// `redactUrl`, and never the value of a secret config key (`isSecretKey`).
export { Config } from "./config.js";
export { Reject, Retry, WharfError } from "./errors.js";
export * as http from "./http.js";
export * as log from "./log.js";
export { nowMs } from "./log.js";
export { isSecretKey, redactUrl } from "./redact.js";
export { Target } from "./target.js";
export { Message, Outcome } from "./types.js";
