#!/usr/bin/env bash
# Installs what `make bench` needs beyond `make deps`, if it is missing:
# redis-server and redis-tools (redis-benchmark), and wrk, from Debian, for
# the peer row (tests/benches/peers.rs: Wharf HTTP under wrk vs Redis
# Streams XADD with appendfsync always under redis-benchmark). The
# packages' own services are not used: the bench starts its own
# redis-server on a free loopback port with its own data dir. Not part of
# `make test`. Safe to run again. Also Node.js and the npm packages of the
# delivery bench's peer row (BullMQ; see the end of this script).
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

# The delivery bench's peer row (tests/benches/delivery.rs): BullMQ, ioredis
# and memjs from the npm registry, at the versions package-lock.json pins,
# run by Node.js (Debian's nodejs, if node is missing).
if ! command -v node >/dev/null 2>&1; then
  echo "==> installing nodejs npm (Debian packages)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
peer="$(dirname "$0")/../tests/benches/delivery-peer"
if [ ! -d "$peer/node_modules/bullmq" ]; then
  echo "==> installing the delivery peer (npm ci in tests/benches/delivery-peer)"
  (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
fi
