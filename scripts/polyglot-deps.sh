#!/usr/bin/env bash
# Installs the toolchains of Python and JavaScript plugins, if missing
# (`make test-deps`; safe to run again, quick when done):
#   - componentize-py (PyPI), which builds sdk/python plugins;
#   - cassandra-driver (PyPI, the DataStax Python driver), which
#     tests/tests/cassandra.rs runs against the fake CQL server
#     (pure Python: CASS_DRIVER_NO_EXTENSIONS=1 skips its C extensions);
#   - sdk/js/node_modules (npm ci from sdk/js/package-lock.json):
#     componentize-js, jco and rolldown, which build sdk/js plugins.
# Needs python3 with pip, and node >= 20 with npm (installed from Debian's
# nodejs and npm packages when missing).
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
CASSANDRA_DRIVER_VERSION=3.30.1
PY="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  echo "==> installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI)"
  "$PY" -m pip install -q --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  command -v componentize-py >/dev/null || { echo "componentize-py not on PATH after install" >&2; exit 1; }
fi

if [ "$("$PY" -c 'import cassandra; print(cassandra.__version__)' 2>/dev/null)" != "$CASSANDRA_DRIVER_VERSION" ]; then
  echo "==> installing cassandra-driver $CASSANDRA_DRIVER_VERSION (PyPI)"
  CASS_DRIVER_NO_EXTENSIONS=1 "$PY" -m pip install -q --disable-pip-version-check "cassandra-driver==$CASSANDRA_DRIVER_VERSION"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> installing node and npm (Debian packages nodejs, npm)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[ "$node_major" -ge 20 ] \
  || { echo "node >= 20 is needed for JavaScript plugins; found $(node --version 2>/dev/null || echo none)" >&2; exit 1; }
if [ ! -f "$ROOT/sdk/js/node_modules/.package-lock.json" ] \
   || [ "$ROOT/sdk/js/package-lock.json" -nt "$ROOT/sdk/js/node_modules/.package-lock.json" ]; then
  echo "==> installing sdk/js build tools (npm ci)"
  (cd "$ROOT/sdk/js" && npm ci --no-audit --no-fund --loglevel=error)
fi
