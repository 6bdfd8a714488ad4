#!/usr/bin/env bash
# The suite on a busy machine: runs scripts/test.sh several times in a row (default 3) while a
# CPU-heavy job (busy loops, default two per core) runs beside it, on a private throwaway
# PostgreSQL cluster whose client connections are sampled four times a second; stops at the first
# red run. Prints, per run: its result, its duration, the load average and the peak number of
# PostgreSQL connections the suite held.
#
#   bash scripts/busy.sh [RUNS]          HOGS=N bash scripts/busy.sh   (N busy loops; default 2 × cores)
#
# The private cluster is used so that the peak counts the suite's connections only (the tests that
# start their own PostgreSQL cluster, such as the chaos test, are not counted here).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

runs=${1:-3}
hogs=${HOGS:-$(( $(nproc) * 2 ))}

SAGAFLOW_TEST_POSTGRES=private
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
dsn=$SAGAFLOW_TEST_POSTGRES

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	stop_private_pg
}
trap cleanup EXIT

logs=$(mktemp -d /tmp/sagaflow-busy.XXXXXX)
log "each run's output goes to $logs/runN.log (kept)"
go build -o "$PGTMP/pgpeak" ./internal/cmd/pgpeak
log "starting $hogs busy loops"
for _ in $(seq "$hogs"); do
	bash -c 'while :; do :; done' &
	pids+=($!)
done

for run in $(seq "$runs"); do
	"$PGTMP/pgpeak" "$dsn" >"$PGTMP/peak.txt" &
	sampler=$!
	pids+=("$sampler")
	start=$(date +%s)
	status=0
	SAGAFLOW_TEST_POSTGRES=$dsn bash scripts/test.sh >"$logs/run$run.log" 2>&1 || status=$?
	kill -INT "$sampler"; wait "$sampler" || true
	secs=$(( $(date +%s) - start ))
	log "run $run/$runs: rc=$status in ${secs}s, load $(cut -d' ' -f1-3 /proc/loadavg); $(cat "$PGTMP/peak.txt")"
	if [ "$status" -ne 0 ]; then
		grep -E '^(--- FAIL|FAIL|panic:)' "$logs/run$run.log" >&2 || true
		log "the whole output: $logs/run$run.log"
		exit "$status"
	fi
done
log "$runs consecutive green runs beside $hogs busy loops"
