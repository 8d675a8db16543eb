// The two ways a delivery (or `init`) fails: `Retry` and `Reject`.

/** Base of `Retry` and `Reject`. Its `reason` is what the operator sees. */
export class WharfError extends Error {
  constructor(reason) {
    super(String(reason));
    this.name = new.target.name;
    this.reason = String(reason);
  }
}

/**
 * A transient failure: the host tries the message again later, with
 * backoff, waiting at least `afterMs` if set (an HTTP `Retry-After`, say).
 * Any other error thrown by a delivery (a failed `fetch`, a bug) is a retry
 * too, its reason naming the error.
 */
export class Retry extends WharfError {
  constructor(reason, { afterMs } = {}) {
    super(reason);
    this.afterMs = afterMs == null ? undefined : Math.max(0, Math.floor(Number(afterMs)));
  }
}

/**
 * A permanent failure: the host moves the message to the dead-letter queue.
 * Throw it only when trying again cannot help. From `init` it stops the
 * plugin from loading.
 */
export class Reject extends WharfError {}
