// The data a plugin receives and returns.

/** One durable message, as a client wrote it. */
export class Message {
  constructor(fields) {
    this.id = fields.id;
    const p = fields.payload ?? "";
    // Text is encoded as UTF-8; a list<u8> from the host may arrive as an array.
    this.payload = p instanceof Uint8Array ? p : typeof p === "string" ? new TextEncoder().encode(p) : Uint8Array.from(p);
    this.namespace = fields.namespace ?? "default";
    this.partition = fields.partition ?? 0;
    this.sequence = fields.sequence ?? 0;
    this.key = fields.key ?? undefined;
    this.headers = fields.headers ?? [];
    this.idempotencyKey = fields.idempotencyKey ?? undefined;
    this.attempt = fields.attempt ?? 1;
    this.replays = fields.replays ?? 0;
    this.writtenAtMs = fields.writtenAtMs ?? 0;
  }

  /** The first header with this name (ASCII case-insensitive). */
  header(name) {
    const lower = name.toLowerCase();
    const hit = this.headers.find(([n]) => n.toLowerCase() === lower);
    return hit ? hit[1] : undefined;
  }

  /** The client's idempotency key, or else the (stable) message id. */
  dedupKey() {
    return this.idempotencyKey ?? this.id;
  }

  /** The payload as text, with invalid UTF-8 replaced. */
  text() {
    return new TextDecoder().decode(this.payload);
  }

  /** The payload parsed as JSON (throws a `SyntaxError` if it is not). */
  json() {
    return JSON.parse(this.text());
  }
}

/** What happened to one message: `kind` is "delivered", "retry" or "reject". */
export class Outcome {
  constructor(kind, reason, afterMs) {
    this.kind = kind;
    this.reason = reason;
    this.afterMs = afterMs;
  }
  static delivered() {
    return new Outcome("delivered");
  }
  static retry(reason, afterMs) {
    return new Outcome("retry", reason, afterMs);
  }
  static reject(reason) {
    return new Outcome("reject", reason);
  }
  get isDelivered() {
    return this.kind === "delivered";
  }
  get isRetry() {
    return this.kind === "retry";
  }
  get isReject() {
    return this.kind === "reject";
  }
}
