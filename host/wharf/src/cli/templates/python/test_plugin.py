"""Unit tests, in plain CPython (no Wasm): `make test`."""

import unittest

from wharf_sdk.testing import Harness, message

from plugin import {{class}}


class {{class}}Test(unittest.TestCase):
    def test_delivers_a_message_and_rejects_an_empty_one(self):
        plugin = Harness({{class}}, {"prefix": "test"})
        outcomes = plugin.deliver([message(b"hello", key="k"), message(b"")])
        self.assertEqual([o.kind for o in outcomes], ["delivered", "reject"])


if __name__ == "__main__":
    unittest.main()
