#!/usr/bin/env bash
# Installs what the build, the demo and the tests need, if it is missing:
# the wasm32-wasip2 Rust target, memcached, libfaketime (the clock-jump
# tests, tests/tests/clock_jumps.rs) and MariaDB (the revision-store
# example's tests, tests/tests/revision_store.rs). Safe to run again.
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

if [ ! -f /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] && ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1; then
  echo "==> installing libfaketime (Debian package faketime)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  echo "==> installing MariaDB (Debian package mariadb-server)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The package's own service is not used: the tests start their own
  # mariadbd, with its own data dir, on a free loopback port.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
fi
