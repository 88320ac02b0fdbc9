#!/usr/bin/env bash
# Run the test suite in the project's virtual environment (created on first use).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k loss`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vpy="$(bash "$root/scripts/setup_env.sh" --dev)"
cd "$root"
exec "$vpy" -m pytest "$@"
