"""Wrap each JSON event in an envelope and POST it to a webhook."""

import json

from wharf_sdk import Reject, Retry, Target, http


class Webhook(Target):
    name, version = "python-webhook", "0.1.0"

    def init(self, config):
        self.url = config.require("url")
        self.timeout_ms = config.parse_or("timeout_ms", int, 5000)

    def deliver_one(self, msg):
        try:
            event = json.loads(msg.payload)
        except ValueError as e:
            raise Reject(f"payload is not JSON: {e}")
        body = json.dumps({"id": msg.id, "key": msg.key, "type": event.pop("type", "event"), "data": event})
        headers = {"content-type": "application/json", "x-wharf-key": msg.key or "", "idempotency-key": msg.dedup_key()}
        resp = http.post(self.url, body, headers, timeout_ms=self.timeout_ms)
        if resp.status == 429 or resp.status >= 500:
            raise Retry(f"webhook answered {resp.status}", after_ms=resp.retry_after_ms())
        if not resp.ok:
            raise Reject(f"webhook answered {resp.status}: {resp.text()[:200]}")
