"""The Python SDK natively: config wording (same as sdk/src/config.rs),
and the runner's guarantees (one outcome per message, whatever the plugin
does). Run from sdk/python: python3 -m unittest -v"""

import unittest

from wharf_sdk import Config, Message, Outcome, Reject, Retry, Target, http, is_secret_key, redact_url
from wharf_sdk.testing import Harness, InitError, init_error, message


class ConfigTest(unittest.TestCase):
    def test_errors_name_the_key_like_the_rust_sdk(self):
        c = Config([("n", "abc"), ("blank", "  "), ("flag", "yes"), ("n2", " 7 ")])
        cases = [
            (lambda: c.require("missing"), "config key `missing` is required but missing"),
            (lambda: c.require("blank"), "config key `blank` is required but empty"),
            (lambda: c.parse("n", int), "config key `n`: cannot parse \"abc\" as int: "),
            (lambda: c.parse("flag", bool), "config key `flag`: cannot parse \"yes\" as bool: provided string was not `true` or `false`"),
        ]
        for call, wording in cases:
            with self.assertRaises(Reject) as e:
                call()
            self.assertTrue(e.exception.reason.startswith(wording), e.exception.reason)
        self.assertEqual(c.parse("n2", int), 7)
        self.assertEqual(c.parse_or("absent", int, 5), 5)
        self.assertIsNone(c.parse_opt("absent", float))

    def test_the_last_value_of_a_repeated_key_wins(self):
        c = Config([("k", "1"), ("k", "2")])
        self.assertEqual(c.get("k"), "2")
        self.assertEqual(c.get_or("x", "d"), "d")
        self.assertEqual(list(c.items()), [("k", "1"), ("k", "2")])


class Flaky(Target):
    def init(self, config):
        self.mode = config.require("mode")

    def deliver_one(self, msg):
        text = msg.payload_text()
        if text == "retry":
            raise Retry("later", after_ms=250)
        if text == "reject":
            raise Reject("never")
        if text == "oserror":
            raise ConnectionRefusedError(111, "Connection refused")
        if text == "bug":
            raise KeyError("oops")


class Short(Target):
    def deliver(self, batch):
        return [None]


class RunnerTest(unittest.TestCase):
    def test_every_kind_of_failure_is_an_outcome(self):
        plugin = Harness(Flaky, {"mode": "x"})
        got = plugin.deliver([message(p) for p in ("ok", "retry", "reject", "oserror", "bug")])
        self.assertEqual([o.kind for o in got], ["delivered", "retry", "reject", "retry", "retry"])
        self.assertEqual(got[1].after_ms, 250)
        self.assertIn("Connection refused", got[3].reason)
        self.assertIn("KeyError", got[4].reason)

    def test_a_wrong_count_is_padded_with_retries(self):
        got = Harness(Short).deliver([message(b"a"), message(b"b")])
        self.assertEqual([o.kind for o in got], ["delivered", "retry"])

    def test_before_init_everything_is_retried_and_init_errors_are_the_reason(self):
        got = Harness.uninitialised(Flaky).deliver([message(b"a")])
        self.assertEqual(got[0].kind, "retry")
        self.assertEqual(init_error(Flaky, {}), "config key `mode` is required but missing")
        with self.assertRaises(InitError):
            Harness(Flaky)

    def test_describe_defaults_to_the_class_name(self):
        self.assertEqual(Harness.uninitialised(Flaky).describe().name, "Flaky")


class MessageTest(unittest.TestCase):
    def test_headers_are_case_insensitive_and_dedup_prefers_the_idempotency_key(self):
        m = Message("0-1", b"\xff", headers=[("X-A", "1")], idempotency_key="idem")
        self.assertEqual(m.header("x-a"), "1")
        self.assertEqual(m.dedup_key(), "idem")
        self.assertEqual(m.payload_text(), "\ufffd")
        self.assertEqual(Outcome.retry("r", 5).after_ms, 5)


class HttpTest(unittest.TestCase):
    def test_urls_are_checked_like_the_rust_sdk(self):
        for bad in ["ftp://x/", "http://", "http:///p", "http://a b/", "localhost:80/"]:
            with self.assertRaises(ValueError, msg=bad):
                http.get(bad)
        self.assertEqual(http._split_url("http://h?q"), (False, "h", "/?q"))
        self.assertEqual(http._split_url("HTTPS://example.com#f"), (True, "example.com", "/"))

    def test_an_invalid_url_is_named_without_its_secrets(self):
        with self.assertRaises(ValueError) as e:
            http.get("http://bob:hunter2@h/x?api_key=abc123")
        self.assertIn("'http://***@h/x?api_key=***'", str(e.exception))
        self.assertNotIn("hunter2", str(e.exception))


# The same cases as the Rust SDK's (sdk/src/tests.rs) and the JS SDK's.
REDACT_CASES = [
    ("http://bob:hunter2@h:8080/hook?api_key=abc&x=1#top", "http://***@h:8080/hook?api_key=***&x=***"),
    ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
    ("https://hooks.example.com", "https://hooks.example.com"),
    ("http://[::1]:8080/p", "http://[::1]:8080/p"),
    ("http://h/p?", "http://h/p?"),
    ("http://h/p#frag", "http://h/p"),
    ("http://h#frag/x?y=1", "http://h"),
    ("", ""),
    ("not a url", "not a url"),
    ("127.0.0.1:11211", "127.0.0.1:11211"),
    ("http://bob@h/", "http://***@h/"),
    ("http://u:p@[::1]:8080/", "http://***@[::1]:8080/"),
    ("HTTPS://u:p@ss@h/x", "HTTPS://***@h/x"),
    ("http://u:p#1@h/x", "http://***@h/x"),
    ("https://h/a/@alice", "https://h/a/@alice"),
    ("http://h/?to=a@b.c&flag&&k=", "http://h/?to=***&***&&k=***"),
    ("http://h?token=abc", "http://h?token=***"),
    ("bob:hunter2@10.0.0.7:11211", "***@10.0.0.7:11211"),
    ("u:p#1@h", "***@h"),
    ("localhost:80/hook?api_key=abc", "localhost:80/hook?api_key=***"),
    ("http:/u:p@h/x", "***@h/x"),
    ("1http://u:p@h/", "***@h/"),
]


class RedactTest(unittest.TestCase):
    def test_redact_url_masks_userinfo_and_query_values_and_drops_the_fragment(self):
        for url, want in REDACT_CASES:
            self.assertEqual(redact_url(url), want, url)

    def test_secret_keys_are_named_so_and_their_values_are_not_echoed(self):
        for key in ["password", "DB_PASSWORD", "token", "api_key", "apiKey", "client_secret", "key", "credentials"]:
            self.assertTrue(is_secret_key(key), key)
        for key in ["url", "username", "key_prefix", "keyspace", "timeout_ms", "tokenizer"]:
            self.assertFalse(is_secret_key(key), key)
        c = Config([("api_key", "hunter2"), ("retries", "http://bob:pw@h/?q=zz")])
        with self.assertRaises(Reject) as e:
            c.parse("api_key", int)
        self.assertIn("`api_key`", e.exception.reason)
        self.assertNotIn("hunter2", e.exception.reason)
        with self.assertRaises(Reject) as e:
            c.parse("retries", int)
        self.assertIn('"http://***@h/?q=***"', e.exception.reason)
        self.assertNotIn("zz", e.exception.reason)


if __name__ == "__main__":
    unittest.main()
