#!/usr/bin/env bash
# Installs what `make bench` needs beyond `make deps`, if it is missing:
# redis-server and redis-tools (redis-benchmark), and wrk, from Debian, for
# the peer row (tests/benches/peers.rs: Wharf HTTP under wrk vs Redis
# Streams XADD with appendfsync always under redis-benchmark). The
# packages' own services are not used: the bench starts its own
# redis-server on a free loopback port with its own data dir. Not part of
# `make test`. Safe to run again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
