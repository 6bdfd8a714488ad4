#!/usr/bin/env bash
# The whole Sagaflow test suite, as the README's second command runs it:
#   gofmt check, go vet, go test (with -race on the packages where concurrency matters).
#
# PostgreSQL for the tests is found in this order:
#   1. SAGAFLOW_TEST_POSTGRES (a DSN), if set;
#   2. a server answering on 127.0.0.1:5432 (user postgres, trust auth);
#   3. otherwise (or when SAGAFLOW_TEST_POSTGRES=private) a private throwaway cluster (initdb + pg_ctl, a free port on 127.0.0.1, a temporary
#      directory, fsync=off); it is stopped and removed when the script exits.
# In every case PostgreSQL's server binaries must be here (Debian's postgresql package is installed
# when initdb/pg_ctl are not found; SAGAFLOW_TEST_PG_BIN is exported): the chaos test
# (internal/chaos, TestChaos) runs its own cluster, which it crashes on purpose.
# Arguments, if any, are package patterns to test instead of ./... (all with -race).
# NATS needs nothing: every test starts its own in-process nats-server with JetStream.
# The web console's browser test (internal/console) drives headless Chromium: Debian's chromium
# package is installed (apt-get, with sudo when not root) when /usr/bin/chromium is missing and
# the packages tested include internal/console; SAGAFLOW_CHROMIUM names another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

log "gofmt"
unformatted=$(find . -name '*.go' -not -path './.git/*' -not -path './.sagaflow/*' -print0 | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then
	log "gofmt would change:"; echo "$unformatted" >&2; exit 1
fi

log "go vet"
go vet ./...

# The checked-in lint configuration (.golangci.yml), at a pinned version; built once into Go's
# build cache (the first build takes a few minutes on 2 cores).
log "golangci-lint"
go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run --allow-parallel-runners ./...

# -race where goroutines meet shared state; the pure packages run without it (faster, and their
# fuzz/property tests do many iterations).
# ensure_chromium installs Debian's chromium for the console's browser test, when it is tested.
ensure_chromium() {
	if [ -n "${SAGAFLOW_CHROMIUM:-}" ] || [ -x /usr/bin/chromium ]; then
		return
	fi
	if ! go list "${@:-./...}" | grep -q '/internal/console$'; then
		return
	fi
	log "no /usr/bin/chromium: installing Debian's chromium package (the console's browser test)"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
ensure_chromium "$@"

log "go test"
if [ $# -gt 0 ]; then
	# Packages given on the command line: run just those, all with -race.
	go test -count=1 -race -timeout 20m "$@"
	exit $?
fi
race_pkgs=$(go list ./... | grep -Ev '/(saga|definitions|cmd/sagaflow)$' || true)
plain_pkgs=$(go list ./... | grep -E '/(saga|definitions|cmd/sagaflow)$' || true)
status=0
# shellcheck disable=SC2086
go test -count=1 -timeout 15m $plain_pkgs || status=$?
# shellcheck disable=SC2086
go test -count=1 -race -timeout 20m -p 2 $race_pkgs || status=$?
# The example that is its own Go module: a participant service built only on the public packages,
# proof that a service outside this repository can use the SDK.
log "examples/travel (its own module)"
(cd examples/travel && go vet ./... && go test -count=1 -race -timeout 10m ./...) || status=$?
exit $status
