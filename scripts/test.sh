#!/usr/bin/env bash
# The whole test run: set-up, type check, lint, then every jest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --qemu
echo "== typecheck"
npx tsc -p tsconfig.json --noEmit
echo "== lint"
npx eslint --max-warnings=0 .
echo "== tests"
npx jest --ci "$@"
