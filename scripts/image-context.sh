#!/usr/bin/env bash
# Collects the build context of the container image (Containerfile at the
# repo root; `make image` runs this, then `podman build`):
#
#   scripts/image-context.sh [OUT]        OUT defaults to target/image-context
#
#   OUT/rootfs/  the image's files at their absolute paths, root-owned:
#     usr/bin/wharf                        the release binary
#     the shared libraries `ldd` names for it, at the paths it names, and
#     the dynamic loader (none for a static binary)
#     usr/lib/wharf/plugins/<name>.wasm    the shipped plugins
#     etc/wharf/wharf.toml                 the default config (examples/container/wharf.toml)
#     etc/ssl/certs/ca-certificates.crt    this machine's CA bundle, for SQS over HTTPS
#     tmp/                                 mode 1777
#     var/lib/                             the data dir's parent
#   OUT/data/    empty: the Containerfile copies it to /var/lib/wharf, owned
#                by the image's user
#
# Inputs (environment): WHARF_BIN (target/release/wharf), PLUGIN_DIR
# (target/plugins), PLUGINS ("memcached http wharf replica cassandra"),
# CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt). Run `make build` first.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/target/image-context}"
BIN="${WHARF_BIN:-$ROOT/target/release/wharf}"
PLUGIN_DIR="${PLUGIN_DIR:-$ROOT/target/plugins}"
PLUGINS="${PLUGINS:-memcached http wharf replica cassandra}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

fail() { echo "image-context: $*" >&2; exit 1; }

[ -x "$BIN" ] || fail "$BIN is missing: run \`make build\` first"
for p in $PLUGINS; do
  [ -f "$PLUGIN_DIR/$p.wasm" ] || fail "$PLUGIN_DIR/$p.wasm is missing: run \`make build\` first"
done

rm -rf "$OUT/rootfs" "$OUT/data"
mkdir -p "$OUT/rootfs" "$OUT/data"
FS="$OUT/rootfs"

install -D -m 0755 "$BIN" "$FS/usr/bin/wharf"

# `ldd` prints "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" per
# library and "/lib64/ld-linux-x86-64.so.2 (0x…)" for the loader; the vDSO
# has no file. Each is copied (symlinks resolved) to the path ldd names,
# which the loader searches or the binary names as its interpreter.
deps="$(ldd "$BIN" 2>&1 || true)"
if grep -q "not found" <<<"$deps"; then
  fail "a library of $BIN is not found: $(grep "not found" <<<"$deps" | tr -s ' \t' ' ')"
fi
libs="$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$deps")"
for lib in $libs; do
  install -D -m 0755 "$lib" "$FS$lib"
done

for p in $PLUGINS; do
  install -D -m 0644 "$PLUGIN_DIR/$p.wasm" "$FS/usr/lib/wharf/plugins/$p.wasm"
done
install -D -m 0644 "$ROOT/examples/container/wharf.toml" "$FS/etc/wharf/wharf.toml"

# The SQS backend verifies TLS against the system's roots (rustls-native-certs).
if [ -f "$CA_BUNDLE" ]; then
  install -D -m 0644 "$CA_BUNDLE" "$FS/etc/ssl/certs/ca-certificates.crt"
else
  echo "image-context: warning: no CA bundle at $CA_BUNDLE; SQS over HTTPS will not verify" >&2
fi

# `wharf plugin check` and a check-config without a data dir use the temp dir.
mkdir -p "$FS/tmp"
chmod 1777 "$FS/tmp"
# /var/lib stays root's; only the data dir in it is the user's (Containerfile).
mkdir -p "$FS/var/lib"

echo "image context in $OUT: wharf, $(wc -w <<<"$libs") shared objects (libraries and loader), plugins: $PLUGINS"
