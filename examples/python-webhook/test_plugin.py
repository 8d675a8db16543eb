"""Unit tests: the plugin in plain CPython (no Wasm) against a local server.
Run: PYTHONPATH=../../sdk/python python3 -m unittest -v"""

import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from wharf_sdk.testing import Harness, init_error, message

from plugin import Webhook


class Sink(BaseHTTPRequestHandler):
    status = 200
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Sink.received.append((self.headers, json.loads(body)))
        self.send_response(Sink.status)
        self.send_header("retry-after", "2")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class WebhookTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}/hook"

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def setUp(self):
        Sink.status, Sink.received = 200, []
        self.plugin = Harness(Webhook, {"url": self.url})

    def test_an_event_is_wrapped_and_posted(self):
        msg = message(b'{"type": "signup", "user": 7}', key="user-7")
        [outcome] = self.plugin.deliver([msg])
        self.assertTrue(outcome.is_delivered, outcome)
        headers, body = Sink.received[0]
        self.assertEqual(body, {"id": msg.id, "key": "user-7", "type": "signup", "data": {"user": 7}})
        self.assertEqual(headers["idempotency-key"], msg.id)

    def test_a_503_is_retried_after_the_retry_after(self):
        Sink.status = 503
        [outcome] = self.plugin.deliver([message(b"{}")])
        self.assertTrue(outcome.is_retry, outcome)
        self.assertEqual(outcome.after_ms, 2000)

    def test_a_400_and_a_non_json_payload_are_rejected(self):
        Sink.status = 400
        outcomes = self.plugin.deliver([message(b"{}"), message(b"not json")])
        self.assertEqual([o.kind for o in outcomes], ["reject", "reject"])
        self.assertIn("400", outcomes[0].reason)
        self.assertIn("not JSON", outcomes[1].reason)

    def test_a_closed_port_is_a_retry(self):
        self.plugin.reinit({"url": "http://127.0.0.1:9/hook"})
        [outcome] = self.plugin.deliver([message(b"{}")])
        self.assertTrue(outcome.is_retry, outcome)

    def test_init_names_a_missing_url(self):
        self.assertEqual(init_error(Webhook, {}), "config key `url` is required but missing")


if __name__ == "__main__":
    unittest.main()
