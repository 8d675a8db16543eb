#!/usr/bin/env bash
# Installs what the build, the demo and the tests need, if it is missing:
# the wasm32-wasip2 Rust target and memcached. Safe to run again.
set -euo pipefail

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "==> installing the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi

if [ ! -x /usr/bin/memcached ] && ! command -v memcached >/dev/null 2>&1; then
  echo "==> installing memcached (Debian package)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The package's own service is not used: the demo and tests start their
  # own memcached on a free loopback port.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null
fi
