#!/usr/bin/env bash
# Quick start: set up (npm packages, QEMU, the test guest), then scripts/quickstart.ts:
# the embedded cluster with the QEMU backend in one process, examples/quickstart
# deployed through the local engine, a drift check, and the cluster kept running
# until Ctrl-C. `npm start -- --once` tears everything down and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --qemu
# The guest build is a no-op when .cache/guest is current.
bash tests/guest/build.sh >/dev/null
data="${KUBEVM_DATA_DIR:-$PWD/.kubevm}"
mkdir -p "$data"
# For examples/kubectl: the same guest as a kubectl-applied VM.
node --import tsx scripts/example-vm.ts > "$data/example-vm.yaml"
exec node --import tsx scripts/quickstart.ts "$@"
