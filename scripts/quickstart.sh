#!/usr/bin/env bash
# Quick start: set up (npm packages, QEMU, the test guest), then run the embedded
# cluster with the VM controller and one node agent in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --qemu
data="${KUBEVM_DATA_DIR:-$PWD/.kubevm}"
mkdir -p "$data"
node --import tsx scripts/example-vm.ts > "$data/example-vm.yaml"
echo "an example VM is in $data/example-vm.yaml (see examples/kubectl/README.md):"
echo "  export KUBECONFIG=$data/kubeconfig; kubectl apply -f $data/example-vm.yaml; kubectl get vm -w"
exec node bin/kubevm cluster up --data-dir "$data" --nodes 1 --backend qemu \
  --allowed-root "$PWD/.cache/guest" --allowed-root "$data/shared" "$@"
