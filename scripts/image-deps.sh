#!/usr/bin/env bash
# Installs podman (Debian package), which `make image` builds the container
# image with and tests/tests/image.rs smoke-tests it with, if it is missing
# (`make test-deps`; safe to run again, quick when done). The image builds
# FROM scratch with the vfs storage driver, so nothing else is needed.
set -euo pipefail

if ! command -v podman >/dev/null 2>&1; then
  echo "==> installing podman (Debian package)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
