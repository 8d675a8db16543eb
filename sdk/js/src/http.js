// A small HTTP client over `fetch`: in Wasm, componentize-js implements
// `fetch` with `wasi:http/outgoing-handler` (the host only lets through
// URLs that start with one of the namespace's `allow_http` prefixes);
// natively it is node's `fetch`.
//
// Failing to get a response at all (refused, reset, timed out, denied by
// the host) throws a `Retry` naming the URL (through `redactUrl`) and the
// cause. Any response, whatever its status, is returned.
import { Retry } from "./errors.js";
import { redactUrl } from "./redact.js";

export const DEFAULT_TIMEOUT_MS = 30_000;

/** A response, body read in full. Header names are lower-case. */
export class Response {
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
  /** True for 2xx. */
  get ok() {
    return this.status >= 200 && this.status < 300;
  }
  header(name) {
    const hit = this.headers.find(([n]) => n === name.toLowerCase());
    return hit ? hit[1] : undefined;
  }
  text() {
    return new TextDecoder().decode(this.body);
  }
  json() {
    return JSON.parse(this.text());
  }
  /** `Retry-After` in ms, if it is a number of seconds. */
  retryAfterMs() {
    const v = this.header("retry-after")?.trim();
    return v && /^\d+$/.test(v) ? Number(v) * 1000 : undefined;
  }
}

/** Send a request and wait for the whole response. */
export async function request(method, url, { body, headers = {}, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  const shown = redactUrl(url);
  if (!/^https?:\/\/[^/?#]/i.test(url)) throw new TypeError(`invalid URL ${JSON.stringify(shown)}: must start with http:// or https://`);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no response within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const resp = await Promise.race([fetch(url, { method, headers, body }), timeout]);
    const data = new Uint8Array(await Promise.race([resp.arrayBuffer(), timeout]));
    const pairs = [];
    resp.headers.forEach((v, n) => pairs.push([n.toLowerCase(), v]));
    return new Response(resp.status, pairs, data);
  } catch (e) {
    // node's fetch quotes the URL in some messages (credentials in it, say).
    const cause = String(e?.cause?.code ?? e?.cause?.message ?? e?.message ?? e).replaceAll(url, shown);
    throw new Retry(`${method} ${shown} failed: ${cause}`);
  } finally {
    clearTimeout(timer);
  }
}

export const get = (url, opts) => request("GET", url, opts);
export const post = (url, body, opts = {}) => request("POST", url, { ...opts, body });
export const put = (url, body, opts = {}) => request("PUT", url, { ...opts, body });
