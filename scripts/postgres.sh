# Sourced by scripts/test.sh and scripts/with-postgres.sh: finds PostgreSQL and exports
# SAGAFLOW_TEST_POSTGRES, in this order: SAGAFLOW_TEST_POSTGRES (a DSN); a server answering on
# 127.0.0.1:5432; otherwise (or when SAGAFLOW_TEST_POSTGRES=private) a private throwaway cluster
# (initdb + pg_ctl, a free port on 127.0.0.1, a temporary directory, fsync=off), stopped when the
# shell exits. Whichever server is used, it also makes sure PostgreSQL's server binaries are here
# (installing Debian's postgresql package when initdb/pg_ctl are not found) and exports their
# directory as SAGAFLOW_TEST_PG_BIN: the chaos test (internal/chaos) runs a cluster of its own.
# The caller has cd'ed to the repository root and defined log().

pg_answers() { # DSN
	go run ./internal/cmd/pgping "$1" >/dev/null 2>&1
}

find_pg_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /usr/local/bin /usr/bin; do
		if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
	done
	return 1
}

# ensure_pg_bin exports SAGAFLOW_TEST_PG_BIN, the directory of initdb and pg_ctl, installing Debian's
# postgresql package first when they are not found.
ensure_pg_bin() {
	local bin
	if [ -n "${SAGAFLOW_TEST_PG_BIN:-}" ]; then
		[ -x "$SAGAFLOW_TEST_PG_BIN/initdb" ] && [ -x "$SAGAFLOW_TEST_PG_BIN/pg_ctl" ] && return 0
		log "SAGAFLOW_TEST_PG_BIN=$SAGAFLOW_TEST_PG_BIN has no initdb and pg_ctl"; exit 1
	fi
	if ! bin=$(find_pg_bin); then
		log "no PostgreSQL server binaries: installing Debian's postgresql package"
		export DEBIAN_FRONTEND=noninteractive
		local sudo=""
		[ "$(id -u)" -eq 0 ] || sudo="sudo"
		$sudo apt-get update -qq
		$sudo apt-get install -y -qq postgresql >/dev/null
		bin=$(find_pg_bin) || { log "postgresql installed but initdb/pg_ctl not found"; exit 1; }
	fi
	export SAGAFLOW_TEST_PG_BIN="$bin"
}

start_private_pg() {
	local bin=$SAGAFLOW_TEST_PG_BIN
	PGTMP=$(mktemp -d /tmp/sagaflow-pg.XXXXXX)
	local port
	port=$(go run ./internal/cmd/freeport)
	local runas=()
	if [ "$(id -u)" -eq 0 ]; then
		# initdb refuses to run as root: run the cluster as the postgres user (or nobody).
		local user=postgres
		id "$user" >/dev/null 2>&1 || user=nobody
		chown "$user" "$PGTMP"
		runas=(su -s /bin/sh "$user" -c)
	fi
	log "starting a throwaway PostgreSQL in $PGTMP on 127.0.0.1:$port"
	local init="'$bin/initdb' -D '$PGTMP/data' -U postgres -A trust --no-sync >'$PGTMP/initdb.log' 2>&1"
	local start="'$bin/pg_ctl' -D '$PGTMP/data' -l '$PGTMP/server.log' -w -t 60 -o \"-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$PGTMP' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300\" start >/dev/null"
	if [ ${#runas[@]} -gt 0 ]; then
		"${runas[@]}" "$init" || { cat "$PGTMP/initdb.log" >&2; exit 1; }
		"${runas[@]}" "$start" || { cat "$PGTMP/server.log" >&2; exit 1; }
		PGSTOP=("${runas[@]}" "'$bin/pg_ctl' -D '$PGTMP/data' -m immediate stop")
	else
		sh -c "$init" || { cat "$PGTMP/initdb.log" >&2; exit 1; }
		sh -c "$start" || { cat "$PGTMP/server.log" >&2; exit 1; }
		PGSTOP=(sh -c "'$bin/pg_ctl' -D '$PGTMP/data' -m immediate stop")
	fi
	trap stop_private_pg EXIT
	export SAGAFLOW_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
}

stop_private_pg() {
	log "stopping the throwaway PostgreSQL"
	"${PGSTOP[@]}" >/dev/null 2>&1 || true
	rm -rf "$PGTMP"
}

ensure_pg_bin
if [ "${SAGAFLOW_TEST_POSTGRES:-}" = private ]; then
	start_private_pg # forced: how the fresh-machine path is checked on a machine that has a server
elif [ -n "${SAGAFLOW_TEST_POSTGRES:-}" ]; then
	log "PostgreSQL: SAGAFLOW_TEST_POSTGRES"
	pg_answers "$SAGAFLOW_TEST_POSTGRES" || { log "SAGAFLOW_TEST_POSTGRES does not answer"; exit 1; }
elif pg_answers "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"; then
	log "PostgreSQL: 127.0.0.1:5432"
	export SAGAFLOW_TEST_POSTGRES="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
else
	start_private_pg
fi

