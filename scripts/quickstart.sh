#!/usr/bin/env bash
# Quick start: set up, then run the embedded cluster in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node bin/kubevm cluster up "$@"
