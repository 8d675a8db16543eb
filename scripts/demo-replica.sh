#!/usr/bin/env bash
# A primary and a replica (docs/replication.md): memcached as each region's
# store, writes to the primary, the replica mirroring its log and delivering
# to its own store, then `wharf replica status` on both sides. Everything on
# free 127.0.0.1 ports, stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/wharf-demo-replica.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { # port log
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$2"; echo "wharf on port $1 did not start"; exit 1
}

mc_a=$(free_port); mc_b=$(free_port); primary=$(free_port); replica=$(free_port)
echo "==> memcached for region A (:$mc_a) and region B (:$mc_b)"
memcached -l 127.0.0.1 -p "$mc_a" -U 0 -u root -m 64 & pids+=($!)
memcached -l 127.0.0.1 -p "$mc_b" -U 0 -u root -m 64 & pids+=($!)

mkdir -p "$work/a" "$work/b"
cat > "$work/b/wharf.toml" <<TOML
[server]
http = "127.0.0.1:$replica"
data_dir = "data"
[namespaces.orders]
partitions = 2
mode = "replica"
[namespaces.orders.target]
plugin = "$root/target/plugins/memcached.wasm"
allow_connect = ["127.0.0.1:$mc_b"]
config = { servers = "127.0.0.1:$mc_b", key_prefix = "demo:" }
TOML
cat > "$work/a/wharf.toml" <<TOML
[server]
http = "127.0.0.1:$primary"
data_dir = "data"
[namespaces.orders]
partitions = 2
[namespaces.orders.targets.cache]
plugin = "$root/target/plugins/memcached.wasm"
allow_connect = ["127.0.0.1:$mc_a"]
config = { servers = "127.0.0.1:$mc_a", key_prefix = "demo:" }
[namespaces.orders.targets.replica]
plugin = "$root/target/plugins/replica.wasm"
ordering = "partition"
allow_http = ["http://127.0.0.1:$replica"]
config = { url = "http://127.0.0.1:$replica" }
TOML
echo "==> replica wharf (region B) on :$replica, primary wharf (region A) on :$primary"
"$root/target/release/wharf" serve --config "$work/b/wharf.toml" 2> "$work/b.log" & pids+=($!)
wait_up "$replica" "$work/b.log"
"$root/target/release/wharf" serve --config "$work/a/wharf.toml" 2> "$work/a.log" & pids+=($!)
wait_up "$primary" "$work/a.log"

echo "==> writing 5 orders to the primary"
for i in 1 2 3 4 5; do
  payload=$(printf '{"order":%d,"status":"paid"}' "$i" | base64 -w0)
  curl -fsS -X POST "http://127.0.0.1:$primary/v1/namespaces/orders/messages" \
    -H 'content-type: application/json' -d "{\"key\":\"order-$i\",\"payload\":\"$payload\"}" >/dev/null
done
echo "==> a client write to the replica is refused:"
printf '   '
curl -sS -X POST "http://127.0.0.1:$replica/v1/namespaces/orders/messages" \
  -H 'content-type: application/json' -d '{"payload":"eA=="}'
echo
echo "==> waiting for region B's memcached to get them through the replica"
for i in 1 2 3 4 5; do
  for _ in $(seq 1 200); do
    v=$(printf 'get demo:order-%d\r\n' "$i" | timeout 2 python3 -c '
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])),timeout=2); s.sendall(sys.stdin.buffer.read())
b=b""
while not b.endswith(b"END\r\n"):
    c=s.recv(65536)
    if not c: break
    b+=c
l=b.split(b"\r\n"); print(l[1].decode() if l[0].startswith(b"VALUE") else "")' "$mc_b")
    [ -n "$v" ] && break
    sleep 0.1
  done
  [ -n "$v" ] || { echo "order-$i never reached region B"; cat "$work/a.log" "$work/b.log"; exit 1; }
  echo "   region B demo:order-$i = $v"
done
echo "==> wharf replica status (primary)"
"$root/target/release/wharf" replica status --server "http://127.0.0.1:$primary"
echo "==> wharf replica status (replica)"
"$root/target/release/wharf" replica status --server "http://127.0.0.1:$replica"
echo "==> demo ok: the replica mirrors the primary's log and delivers to its own region"
