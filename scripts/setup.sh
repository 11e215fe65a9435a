#!/usr/bin/env bash
# Installs what kubevm needs on a fresh Debian 12 machine: Debian packages
# (through apt-get when run as root; otherwise prints the exact line to run)
# and the npm packages (npm ci when node_modules is missing or stale).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
for extra in "$@"; do
  case "$extra" in
    --qemu)
      command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
      command -v qemu-img >/dev/null 2>&1 || need_apt+=(qemu-utils)
      command -v passt >/dev/null 2>&1 || need_apt+=(passt)
      ;;
  esac
done

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing Debian packages. Run as root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

# npm ci when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
