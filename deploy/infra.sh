#!/usr/bin/env bash
# Runs the local infrastructure of the dev stack: PostgreSQL, NATS with JetStream, FerretDB.
#
#   deploy/infra.sh [up]       start all, labelled logs, stay in the foreground; Ctrl-C stops all
#   deploy/infra.sh start      start all in the background (logs in .run/logs) and return
#   deploy/infra.sh stop       stop what `start` (or a foreground run) started
#   deploy/infra.sh status     say what runs
#   deploy/infra.sh clean-data wipe the data in .run, after checking nothing runs
#
# Everything lives in .run: pg (data), nats (JetStream store), ferretdb (SQLite files), logs,
# pids. Data survives restarts. A component whose address the environment points elsewhere is
# not started: POSTGRES_HOST other than localhost/127.0.0.1, NATS_URL set, MONGODB_URI set.
# run.sh sources this file and uses the infra_* functions in its own foreground process.
set -euo pipefail
LOG_TAG=${LOG_TAG:-infra}
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INFRA_NAMES=(postgres nats ferretdb)
declare -A INFRA_PIDS=()
INFRA_STOP_REQUESTED=0

infra_config() {
	: "${POSTGRES_PORT:=5432}" "${POSTGRES_USER:=postgres}" "${POSTGRES_PASSWORD:=postgres}"
	: "${POSTGRES_DB:=users_db}" "${NATS_PORT:=4222}" "${NATS_MONITOR_PORT:=8222}"
	: "${MONGODB_PORT:=27017}"
	export POSTGRES_PORT POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB NATS_PORT NATS_MONITOR_PORT MONGODB_PORT
	PG_LOCAL=1 NATS_LOCAL=1 MONGO_LOCAL=1
	case ${POSTGRES_HOST:-} in "" | localhost | 127.0.0.1 | ::1) ;; *) PG_LOCAL=0 ;; esac
	[[ -z ${NATS_URL:-} ]] || NATS_LOCAL=0
	[[ -z ${MONGODB_URI:-} ]] || MONGO_LOCAL=0
}

infra_local() {
	case $1 in
	postgres) ((PG_LOCAL)) ;;
	nats) ((NATS_LOCAL)) ;;
	ferretdb) ((MONGO_LOCAL)) ;;
	esac
}

# --- PostgreSQL data folder -------------------------------------------------------------------

# The data lives in .run/pg. When we are root the server runs as `postgres`, which must be
# able to reach that folder; a checkout under /root (mode 700) is out of its reach, and we do
# not loosen the permissions of folders above the repo. Then, and when the path would be too
# long for the server's unix socket (kept in the data folder), the data goes to
# /var/tmp/user-api-dev-<hash of the run folder path>/pg and .run/pg is a symlink to it, so the
# choice is made once and stays visible in `ls -l .run`.
pg_datadir() {
	local link=$RUN_DIR/pg
	if [[ -L $link ]]; then
		PGDATA_DIR=$(readlink -f "$link")
	elif [[ -d $link ]]; then
		PGDATA_DIR=$link
	else
		mkdir -p "$RUN_DIR"
		if ((${#link} <= 80)) && "${AS_PG[@]}" test -x "$RUN_DIR" 2>/dev/null; then
			PGDATA_DIR=$link
		else
			local base
			base=/var/tmp/user-api-dev-$(printf '%s' "$RUN_DIR" | sha1sum | cut -c1-12)
			mkdir -p "$base" && chmod 755 "$base"
			PGDATA_DIR=$base/pg
			ln -s "$PGDATA_DIR" "$link"
		fi
	fi
}

pg_initdb() {
	mkdir -p "$PGDATA_DIR"
	is_root && chown postgres:postgres "$PGDATA_DIR"
	chmod 700 "$PGDATA_DIR"
	"${AS_PG[@]}" test -w "$PGDATA_DIR" ||
		die "the postgres user cannot write $PGDATA_DIR: remove it (deploy/infra.sh clean-data) and retry"
	say "initialising PostgreSQL data in $PGDATA_DIR"
	local pwfile
	pwfile=$(mktemp)
	printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
	is_root && chown postgres "$pwfile"
	# Password authentication over TCP (what the services use), trust on the unix socket in
	# the data folder, which only the owner of the data can reach.
	if ! "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$pwfile" -E UTF8 \
		--locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >>"$RUN_DIR/logs/postgres.log" 2>&1; then
		rm -f "$pwfile"
		log_tail postgres
		die "initdb failed in $PGDATA_DIR"
	fi
	rm -f "$pwfile"
}

# Role and database as the environment names them; the password is set on every start, so a
# changed POSTGRES_PASSWORD takes effect.
pg_setup() {
	"$PG_BIN/psql" -X -q -h "$PGDATA_DIR" -p "$POSTGRES_PORT" -U postgres -d postgres \
		-v ON_ERROR_STOP=1 -v user="$POSTGRES_USER" -v pass="$POSTGRES_PASSWORD" -v db="$POSTGRES_DB" \
		>/dev/null <<-'SQL'
		SELECT format('CREATE ROLE %I LOGIN SUPERUSER', :'user')
		 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
		SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'user', :'pass') \gexec
		SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
		 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
	SQL
}

# --- starting and stopping --------------------------------------------------------------------

# spawn MODE NAME CMD...: starts CMD in a session of its own, so a Ctrl-C in the terminal
# reaches only us and we stop things in order. fg: labelled output on stdout and in
# .run/logs/NAME.log; bg: the log file only.
spawn() {
	local mode=$1 name=$2
	shift 2
	if [[ $mode == fg ]]; then
		# The labeller is opened here, not in the child's redirection, so that it is our
		# child and not one of the server's (PostgreSQL reaps children it did not start).
		local fd
		exec {fd}> >(log_label "$name")
		setsid "$@" </dev/null >&"$fd" 2>&1 &
		exec {fd}>&-
	else
		setsid "$@" </dev/null >>"$RUN_DIR/logs/$name.log" 2>&1 &
	fi
	INFRA_PIDS[$name]=$!
	printf '%s\n' "$!" >"$RUN_DIR/pids/$name.pid"
}

# Keeps the previous run's log as NAME.log.1.
log_rotate() {
	[[ -f $RUN_DIR/logs/$1.log ]] && mv -f "$RUN_DIR/logs/$1.log" "$RUN_DIR/logs/$1.log.1"
	: >"$RUN_DIR/logs/$1.log"
}

# pidfile_pid NAME: the pid in .run/pids/NAME.pid if that process still runs the program we
# started (a reused pid must not be signalled).
pidfile_pid() {
	local f=$RUN_DIR/pids/$1.pid pid exe
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	pid_alive "$pid" || return 1
	exe=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	case $1 in
	postgres) [[ $exe == *postgres* ]] ;;
	nats) [[ $exe == *nats-server* ]] ;;
	ferretdb) [[ $exe == *ferretdb* ]] ;;
	*) true ;;
	esac || return 1
	printf '%s\n' "$pid"
}

infra_check_not_running() {
	local n pid
	for n in "${INFRA_NAMES[@]}"; do
		if pid=$(pidfile_pid "$n"); then
			die "$n already runs from .run (pid $pid): stop it with deploy/infra.sh stop"
		fi
	done
}

infra_check_ports() {
	((PG_LOCAL)) && port_check "$POSTGRES_PORT" POSTGRES_PORT PostgreSQL
	((NATS_LOCAL)) && port_check "$NATS_PORT" NATS_PORT NATS
	((NATS_LOCAL)) && port_check "$NATS_MONITOR_PORT" NATS_MONITOR_PORT "the NATS monitoring endpoint"
	((MONGO_LOCAL)) && port_check "$MONGODB_PORT" MONGODB_PORT FerretDB
	return 0
}

infra_ready() {
	case $1 in
	postgres) "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" -t 1 ;;
	nats) curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$NATS_MONITOR_PORT/healthz" 2>/dev/null ;;
	ferretdb) port_in_use "$MONGODB_PORT" ;;
	esac
}

# infra_wait_ready NAME SECONDS
infra_wait_ready() {
	local name=$1 pid=${INFRA_PIDS[$1]} deadline=$((SECONDS + $2))
	until infra_ready "$name"; do
		if ((INFRA_STOP_REQUESTED)); then return 1; fi
		if ! pid_alive "$pid"; then
			log_tail "$name"
			say "$name exited while starting"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log_tail "$name"
			say "$name did not become ready within $2 s"
			return 1
		fi
		sleep 0.1
	done
}

# infra_start fg|bg: starts the local components and waits until each is ready. Returns
# non-zero (after stopping what it started) if one cannot start.
infra_start() {
	local mode=$1
	infra_config
	tools_load
	mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"
	infra_check_not_running
	infra_check_ports
	if ((PG_LOCAL)); then
		pg_datadir
		log_rotate postgres
		[[ -s $PGDATA_DIR/PG_VERSION ]] || pg_initdb
		spawn "$mode" postgres "${AS_PG[@]}" "$PG_BIN/postgres" -D "$PGDATA_DIR" -p "$POSTGRES_PORT" \
			-c listen_addresses=127.0.0.1 -c unix_socket_directories="$PGDATA_DIR"
	fi
	if ((NATS_LOCAL)); then
		mkdir -p "$RUN_DIR/nats"
		log_rotate nats
		spawn "$mode" nats "$NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" \
			-sd "$RUN_DIR/nats" -n user-api-dev
	fi
	if ((MONGO_LOCAL)); then
		mkdir -p "$RUN_DIR/ferretdb"
		log_rotate ferretdb
		# --debug-addr=- : its debug HTTP listener defaults to the fixed port 8088, which we do
		# not need and which would clash with anything else there.
		spawn "$mode" ferretdb "$FERRETDB" --handler=sqlite --sqlite-url="file:$RUN_DIR/ferretdb/" \
			--listen-addr="127.0.0.1:$MONGODB_PORT" --state-dir="$RUN_DIR/ferretdb" --debug-addr=- \
			--telemetry=disable --log-level=info
	fi

	local ok=1
	((PG_LOCAL)) && { infra_wait_ready postgres 120 && pg_setup || ok=0; }
	((ok && NATS_LOCAL)) && { infra_wait_ready nats 30 || ok=0; }
	((ok && MONGO_LOCAL)) && { infra_wait_ready ferretdb 30 || ok=0; }
	if ((!ok)); then
		infra_stop
		return 1
	fi

	local rel=${RUN_DIR#"$REPO_ROOT"/}
	if ((PG_LOCAL)); then
		say "postgres  at postgresql://$POSTGRES_USER@127.0.0.1:$POSTGRES_PORT/$POSTGRES_DB (data $PGDATA_DIR)"
	else
		say "postgres  external at ${POSTGRES_HOST}:$POSTGRES_PORT (POSTGRES_HOST is set): not started"
	fi
	if ((NATS_LOCAL)); then
		say "nats      at nats://127.0.0.1:$NATS_PORT (monitor http://127.0.0.1:$NATS_MONITOR_PORT, store $rel/nats)"
	else
		say "nats      external at $NATS_URL (NATS_URL is set): not started"
	fi
	if ((MONGO_LOCAL)); then
		say "ferretdb  at mongodb://127.0.0.1:$MONGODB_PORT/ (SQLite in $rel/ferretdb)"
	else
		say "mongodb   external at $MONGODB_URI (MONGODB_URI is set): FerretDB not started"
	fi
}

# Stops the components this process started; with --pidfiles also those that .run/pids
# names (the `stop` action, for a `start` in the background or a run in another terminal).
infra_stop() {
	local n pid
	for n in ferretdb nats postgres; do
		pid=${INFRA_PIDS[$n]:-}
		if [[ -z $pid && ${1:-} == --pidfiles ]]; then
			pid=$(pidfile_pid "$n") || { rm -f "$RUN_DIR/pids/$n.pid"; continue; }
		fi
		[[ -n $pid ]] || continue
		unset "INFRA_PIDS[$n]"
		if pid_alive "$pid"; then
			say "stopping $n (pid $pid)"
			if [[ $n == postgres ]]; then
				[[ -n ${PGDATA_DIR:-} ]] || pg_datadir
				# Fast shutdown: roll back open transactions, checkpoint, exit.
				"${AS_PG[@]}" "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >/dev/null 2>&1 || true
				pid_stop postgres "$pid" INT 30
			else
				pid_stop "$n" "$pid" TERM 10
			fi
		fi
		wait "$pid" 2>/dev/null || true
		rm -f "$RUN_DIR/pids/$n.pid"
	done
}

infra_status() {
	infra_config
	local n pid any=0
	for n in "${INFRA_NAMES[@]}"; do
		if ! infra_local "$n"; then
			say "$n: external, not managed here"
		elif pid=$(pidfile_pid "$n"); then
			say "$n: running (pid $pid)"
			any=1
		else
			say "$n: not running"
		fi
	done
	((any))
}

infra_clean_data() {
	local n pid
	for n in "${INFRA_NAMES[@]}"; do
		if pid=$(pidfile_pid "$n"); then
			die "$n is running (pid $pid): stop it first (Ctrl-C, or deploy/infra.sh stop)"
		fi
	done
	tools_load
	if [[ -e $RUN_DIR/pg ]]; then
		pg_datadir
		if [[ -f $PGDATA_DIR/postmaster.pid ]] &&
			pid=$(head -n 1 "$PGDATA_DIR/postmaster.pid") && pid_alive "$pid"; then
			die "a PostgreSQL server (pid $pid) still uses $PGDATA_DIR: stop it first"
		fi
		if [[ -L $RUN_DIR/pg ]]; then
			case $PGDATA_DIR in
			/var/tmp/user-api-dev-*/pg) rm -rf "$PGDATA_DIR" && rmdir "${PGDATA_DIR%/pg}" 2>/dev/null || true ;;
			*) warn "not removing $PGDATA_DIR (.run/pg points there, outside /var/tmp/user-api-dev-*)" ;;
			esac
		fi
	fi
	rm -rf "$RUN_DIR/pg" "$RUN_DIR/nats" "$RUN_DIR/ferretdb" "$RUN_DIR/logs" "$RUN_DIR/pids"
	say "removed the data in ${RUN_DIR#"$REPO_ROOT"/} (PostgreSQL, NATS, FerretDB) and the logs"
}

# Foreground: the process supervises its children until a signal or until one of them dies.
infra_up() {
	trap 'INFRA_STOP_REQUESTED=1' INT TERM
	# Whatever ends this script, its children go with it.
	trap 'infra_stop' EXIT
	if ! infra_start fg; then
		((INFRA_STOP_REQUESTED)) && exit 0
		die "could not start the infrastructure"
	fi
	local pids=("${INFRA_PIDS[@]}")
	if ((${#pids[@]} == 0)); then
		say "nothing to run: every component is external"
		exit 0
	fi
	say "running; Ctrl-C stops it"
	local dead=
	while ((!INFRA_STOP_REQUESTED)); do
		dead=
		wait -n -p dead "${pids[@]}" || true
		((INFRA_STOP_REQUESTED)) && break
		[[ -n $dead ]] || continue
		local n name=
		for n in "${!INFRA_PIDS[@]}"; do [[ ${INFRA_PIDS[$n]} == "$dead" ]] && name=$n; done
		[[ -n $name ]] || continue
		unset "INFRA_PIDS[$name]"
		rm -f "$RUN_DIR/pids/$name.pid"
		printf '\n%s: ERROR: %s (pid %s) exited unexpectedly; stopping the rest\n\n' "$LOG_TAG" "$name" "$dead" >&2
		log_tail "$name"
		infra_stop
		exit 1
	done
	say "stopping"
	infra_stop
	trap - EXIT
	say "stopped"
	exit 0
}

infra_bg_start() {
	trap 'infra_stop' EXIT
	infra_start bg || die "could not start the infrastructure"
	trap - EXIT
	say "started in the background; logs in ${RUN_DIR#"$REPO_ROOT"/}/logs; stop with deploy/infra.sh stop"
}

infra_main() {
	case ${1:-up} in
	up) infra_up ;;
	start) infra_bg_start ;;
	stop) infra_config; tools_load; infra_stop --pidfiles ;;
	status) infra_status ;;
	clean-data) infra_config; infra_clean_data ;;
	-h | --help | help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" ;;
	*) die "unknown action '$1' (up, start, stop, status, clean-data)" ;;
	esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	infra_main "$@"
fi
