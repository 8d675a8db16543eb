// Wrap each JSON event in an envelope and POST it to a webhook.
import { Reject, Retry, Target, http } from "wharf-sdk";

export default class Webhook extends Target {
  static pluginName = "js-webhook";

  init(config) {
    this.url = config.require("url");
    this.timeoutMs = config.parseOr("timeout_ms", "int", 5000);
  }

  async deliverOne(msg) {
    let event;
    try {
      event = msg.json();
    } catch (e) {
      throw new Reject(`payload is not JSON: ${e.message}`);
    }
    const { type = "event", ...data } = event;
    const body = JSON.stringify({ id: msg.id, key: msg.key ?? null, type, data });
    const headers = { "content-type": "application/json", "x-wharf-key": msg.key ?? "", "idempotency-key": msg.dedupKey() };
    const resp = await http.post(this.url, body, { headers, timeoutMs: this.timeoutMs });
    if (resp.status === 429 || resp.status >= 500) {
      throw new Retry(`webhook answered ${resp.status}`, { afterMs: resp.retryAfterMs() });
    }
    if (!resp.ok) throw new Reject(`webhook answered ${resp.status}: ${resp.text().slice(0, 200)}`);
  }
}
