"""{{name}}: a Wharf target plugin. It logs every message through the host
and delivers it; replace `deliver_one` with your own delivery."""

from wharf_sdk import Reject, Target, log


class {{class}}(Target):
    name, version = "{{name}}", "0.1.0"

    def init(self, config):
        self.prefix = config.get_or("prefix", "got")

    def deliver_one(self, msg):
        if not msg.payload:
            raise Reject("empty payload")
        log.info(f"{self.prefix} {msg.id} key={msg.key!r}: {msg.payload_text()}")
