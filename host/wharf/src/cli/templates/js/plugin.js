// {{name}}: a Wharf target plugin. It logs every message through the host
// and delivers it; replace `deliverOne` with your own delivery.
import { Reject, Target, log } from "wharf-sdk";

export default class {{class}} extends Target {
  static pluginName = "{{name}}";

  init(config) {
    this.prefix = config.getOr("prefix", "got");
  }

  async deliverOne(msg) {
    if (msg.payload.length === 0) throw new Reject("empty payload");
    log.info(`${this.prefix} ${msg.id} key=${msg.key}: ${msg.text()}`);
  }
}
