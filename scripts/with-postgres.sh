#!/usr/bin/env bash
# Runs a command with SAGAFLOW_TEST_POSTGRES pointing at a PostgreSQL found (or started) the way
# the test command does, for example:
#   bash scripts/with-postgres.sh go run ./cmd/sagaflow bench saga
# A private throwaway server, if one had to be started, is stopped when the command ends.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
"$@"
