#!/usr/bin/env bash
# The main job on the embedded default: a real memcached, Wharf as a sidecar
# in front of it, sample writes, and the values arriving in memcached.
# Starts everything on free 127.0.0.1 ports and stops it all by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/wharf-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mc_get() { # key -> value or empty
  python3 - "$1" "$mc_port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
s.sendall(f"get {sys.argv[1]}\r\n".encode())
buf = b""
while not (buf.endswith(b"END\r\n")):
    chunk = s.recv(65536)
    if not chunk: break
    buf += chunk
lines = buf.split(b"\r\n")
print(lines[1].decode() if lines[0].startswith(b"VALUE") else "")
PY
}

mc_port=$(free_port)
http_port=$(free_port)
echo "==> starting memcached on 127.0.0.1:$mc_port"
memcached -l 127.0.0.1 -p "$mc_port" -U 0 -u root -m 64 &
pids+=($!)

cat > "$work/wharf.toml" <<TOML
[server]
http = "127.0.0.1:$http_port"
data_dir = "data"

[namespaces.orders]
partitions = 4

[namespaces.orders.target]
plugin = "$root/target/plugins/memcached.wasm"
allow_connect = ["127.0.0.1:$mc_port"]
config = { servers = "127.0.0.1:$mc_port", key_prefix = "demo:" }
TOML
echo "==> starting wharf (config $work/wharf.toml)"
"$root/target/release/wharf" serve --config "$work/wharf.toml" 2> "$work/wharf.log" &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null || { cat "$work/wharf.log"; echo "wharf did not start"; exit 1; }

echo "==> writing 5 orders"
for i in 1 2 3 4 5; do
  payload=$(printf '{"order":%d,"status":"paid"}' "$i" | base64 -w0)
  printf '   order-%d -> ' "$i"
  curl -fsS -X POST "http://127.0.0.1:$http_port/v1/namespaces/orders/messages" \
    -H 'content-type: application/json' \
    -d "{\"key\":\"order-$i\",\"payload\":\"$payload\"}"
  echo
done

echo "==> reading them back from memcached"
for i in 1 2 3 4 5; do
  value=""
  for _ in $(seq 1 100); do
    value=$(mc_get "demo:order-$i")
    [ -n "$value" ] && break
    sleep 0.1
  done
  if [ -z "$value" ]; then
    echo "   demo:order-$i did not arrive"; cat "$work/wharf.log"; exit 1
  fi
  echo "   demo:order-$i = $value"
done

echo "==> status"
curl -fsS "http://127.0.0.1:$http_port/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for name, ns in s["namespaces"].items():
    p = ns["plugin"]
    print("   namespace %s: plugin %s %s dlq=%d" % (name, p["state"], p["digest"], ns["dlq_size"]))
    for q in ns["partitions"]:
        print("     partition %d: head=%d delivered_watermark=%d backlog=%d" % (q["partition"], q["head_sequence"], q["delivered_watermark"], q["backlog"]))
'
echo "==> demo ok: 5 writes made durable, then delivered to memcached through the Wasm plugin"
