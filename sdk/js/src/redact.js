// Secrets out of what a plugin reports (same rules as the Rust SDK's
// `sdk/src/redact.rs`): reasons and log lines reach status, dead-letter
// entries and the host's log.

const MASK = "***";
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
const SECRET_SUFFIXES = ["password", "passwd", "token", "tokens", "secret", "key", "credentials"];

/**
 * `url` with its secrets masked, for a log line or an error reason.
 *
 * The userinfo (`user:password@`, `user@`: what precedes the last `@`
 * before the first `/` or `?` after `://`) becomes `***@`; each query value
 * becomes `***` (`?api_key=abc&x=1` -> `?api_key=***&x=***`, a part without
 * `=` -> `***`); the fragment is dropped. Input that is not `scheme://...`
 * is masked anyway: everything up to the last `@` before the first `?`
 * becomes `***`, and query values are masked as above.
 */
export function redactUrl(url) {
  const scheme = SCHEME.exec(url)?.[0] ?? "";
  const rest = url.slice(scheme.length);
  // The authority does not end at a `#`, so that a `#` in a password is
  // masked with the rest of it.
  const end = rest.search(scheme ? /[/?]/ : /\?/);
  let authority = end < 0 ? rest : rest.slice(0, end);
  let tail = end < 0 ? "" : rest.slice(end);
  const at = authority.lastIndexOf("@");
  if (at >= 0) authority = MASK + authority.slice(at);
  if (scheme) {
    if (authority.includes("#")) [authority, tail] = [authority.split("#")[0], ""];
    tail = tail.split("#")[0];
  }
  const q = tail.indexOf("?");
  if (q >= 0) tail = `${tail.slice(0, q)}?${tail.slice(q + 1).split("&").map(maskQueryPart).join("&")}`;
  return scheme + authority + tail;
}

function maskQueryPart(part) {
  const eq = part.indexOf("=");
  if (eq >= 0) return `${part.slice(0, eq)}=${MASK}`;
  return part ? MASK : "";
}

/**
 * Whether a config key names a secret, by the convention the host also
 * uses: its name ends in `password`, `passwd`, `token`, `tokens`, `secret`,
 * `key` (so `api_key`, `apiKey`) or `credentials`, in any case. Never put
 * the value of such a key in a reason or a log line.
 */
export function isSecretKey(key) {
  const lower = key.toLowerCase();
  return SECRET_SUFFIXES.some((s) => lower.endsWith(s));
}
