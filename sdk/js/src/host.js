// The host services natively (node, unit tests): stderr and the system
// clock. A Wasm build swaps this module for `host-wasm.js` (see build.mjs).

export function log(level, message) {
  console.error(`[wharf-plugin ${level.toUpperCase().padStart(5)}] ${message}`);
}

export function nowMs() {
  return Date.now();
}
