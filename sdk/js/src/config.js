// The namespace's `target.config` table (same wording as the Rust SDK's
// `sdk/src/config.rs`).
import { Reject } from "./errors.js";
import { isSecretKey, redactUrl } from "./redact.js";

/**
 * The plugin's configuration, every value a string. Errors from these
 * helpers are `Reject`s that name the key and the problem, ready to be
 * thrown from `init`.
 *
 * A key whose name ends in `password`, `token`, `secret`, `key` (so
 * `api_key`) and the like (`isSecretKey`) holds a secret: these errors never
 * echo its value, and neither should the plugin's own. Other values they
 * echo go through `redactUrl` first.
 */
export class Config {
  /** @param {Iterable<[string, string]> | Record<string, string>} entries */
  constructor(entries = []) {
    const pairs = Symbol.iterator in Object(entries) ? [...entries] : Object.entries(entries);
    this.entries = pairs.map(([k, v]) => [String(k), String(v)]);
  }

  /** The value of `key`, if set (the last one wins if a key repeats). */
  get(key) {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      if (this.entries[i][0] === key) return this.entries[i][1];
    }
    return undefined;
  }

  /** The value of `key`, or `fallback` if it is not set. */
  getOr(key, fallback) {
    const v = this.get(key);
    return v === undefined ? fallback : v;
  }

  /** The value of `key`; a `Reject` if it is missing or blank. */
  require(key) {
    const v = this.get(key);
    if (v === undefined) throw new Reject(`config key \`${key}\` is required but missing`);
    if (v.trim() === "") throw new Reject(`config key \`${key}\` is required but empty`);
    return v;
  }

  /** A required `key`, parsed as `kind`: "int", "float", "bool" or a function. */
  parse(key, kind) {
    return parseValue(key, this.require(key), kind);
  }

  /** An optional `key`, parsed; `undefined` if not set. */
  parseOpt(key, kind) {
    const v = this.get(key);
    return v === undefined ? undefined : parseValue(key, v, kind);
  }

  /** An optional `key`, parsed, or `fallback` if not set. */
  parseOr(key, kind, fallback) {
    const v = this.parseOpt(key, kind);
    return v === undefined ? fallback : v;
  }

  [Symbol.iterator]() {
    return this.entries[Symbol.iterator]();
  }
}

const PARSERS = {
  int(text) {
    if (!/^[+-]?\d+$/.test(text)) throw new Error("invalid digit found in string");
    const n = Number(text);
    if (!Number.isSafeInteger(n)) throw new Error("number too large to fit in target type");
    return n;
  },
  float(text) {
    const n = Number(text);
    if (text === "" || Number.isNaN(n)) throw new Error("invalid float literal");
    return n;
  },
  bool(text) {
    if (text === "true") return true;
    if (text === "false") return false;
    throw new Error("provided string was not `true` or `false`");
  },
};

function parseValue(key, value, kind) {
  const parser = typeof kind === "function" ? kind : PARSERS[kind];
  if (!parser) throw new TypeError(`unknown config type ${JSON.stringify(kind)}`);
  const name = typeof kind === "function" ? kind.name || "value" : kind;
  const text = value.trim();
  try {
    return parser(text);
  } catch (e) {
    // The parse error may quote the value too.
    if (isSecretKey(key)) throw new Reject(`config key \`${key}\`: cannot parse its value (a secret, not shown) as ${name}`);
    const detail = String(e?.message ?? e).replaceAll(text, redactUrl(text));
    throw new Reject(`config key \`${key}\`: cannot parse ${JSON.stringify(redactUrl(value))} as ${name}: ${detail}`);
  }
}
