#!/usr/bin/env bash
# Runs the local infrastructure of the dev stack: PostgreSQL, NATS with JetStream, FerretDB on a
# PostgreSQL of its own.
#
#   deploy/infra.sh [up]       start all, labelled logs, stay in the foreground; Ctrl-C stops all
#   deploy/infra.sh start      start all in the background (logs in .run/logs) and return
#   deploy/infra.sh stop       stop what `start` (or a foreground run) started
#   deploy/infra.sh status     say what runs
#   deploy/infra.sh clean-data wipe the data in .run, after checking nothing runs
#
# Everything lives in .run: pg (the application's data), nats (JetStream store), ferretdb-pg (the
# PostgreSQL cluster that holds FerretDB's data: database ferretdb, set up by
# deploy/ferretdb-store.sql, reachable on its unix socket only), ferretdb (FerretDB's state), logs,
# pids. Data survives restarts. A component whose address the environment points elsewhere is
# not started: POSTGRES_HOST other than localhost/127.0.0.1, NATS_URL set, MONGODB_URI set (then
# neither FerretDB nor its PostgreSQL).
#
# PostgreSQL: the superuser logs in on the unix socket only; each process has a role of its own
# (migrations/0008_roles.sql) with a password generated once into .run/secrets. Every start creates
# what is missing of them, applies the migrations as user_sync_owner, and writes .run/<process>.env
# (user-api, outbox-relay, notification-consumer, migrate, audit; mode 0600, KEY=VALUE lines as
# systemd's EnvironmentFile reads them): what each process needs to reach what this script started.
# run.sh sources this file and uses the infra_* functions in its own foreground process.
set -euo pipefail
LOG_TAG=${LOG_TAG:-infra}
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INFRA_NAMES=(postgres nats ferretdb-pg ferretdb)
declare -A INFRA_PIDS=()
INFRA_STOP_REQUESTED=0

BIN_DIR=${BIN_DIR:-$REPO_ROOT/bin}

infra_config() {
	: "${POSTGRES_PORT:=5432}" "${POSTGRES_DB:=users_db}" "${NATS_PORT:=4222}" "${NATS_MONITOR_PORT:=8222}"
	: "${MONGODB_PORT:=27017}"
	: "${USER_API_PORT:=8080}" "${NOTIFICATION_CONSUMER_PORT:=8081}" "${OUTBOX_RELAY_PORT:=8082}"
	: "${AUDIT_PORT:=8083}"
	export POSTGRES_PORT POSTGRES_DB NATS_PORT NATS_MONITOR_PORT MONGODB_PORT
	PG_LOCAL=1 NATS_LOCAL=1 MONGO_LOCAL=1
	case ${POSTGRES_HOST:-} in "" | localhost | 127.0.0.1 | ::1) ;; *) PG_LOCAL=0 ;; esac
	[[ -z ${NATS_URL:-} ]] || NATS_LOCAL=0
	[[ -z ${MONGODB_URI:-} ]] || MONGO_LOCAL=0
}

infra_local() {
	case $1 in
	postgres) ((PG_LOCAL)) ;;
	nats) ((NATS_LOCAL)) ;;
	ferretdb-pg | ferretdb) ((MONGO_LOCAL)) ;;
	esac
}

# --- PostgreSQL data folders ------------------------------------------------------------------

# pg_datadir_of NAME: the data folder of the cluster .run/NAME (pg: the application's,
# ferretdb-pg: FerretDB's). When we are root the server runs as `postgres`, which must be able
# to reach that folder; a checkout under /root (mode 700) is out of its reach, and we do not
# loosen the permissions of folders above the repo. Then, and when the path would be too long for
# the server's unix socket (kept in the data folder), the data goes to
# /var/tmp/user-api-dev-<hash of the run folder path>/NAME and .run/NAME is a symlink to it, so
# the choice is made once and stays visible in `ls -l .run`.
pg_datadir_of() {
	local link=$RUN_DIR/$1
	if [[ -L $link ]]; then
		readlink -f "$link"
	elif [[ -d $link ]]; then
		printf '%s\n' "$link"
	else
		mkdir -p "$RUN_DIR"
		if ((${#link} <= 80)) && "${AS_PG[@]}" test -x "$RUN_DIR" 2>/dev/null; then
			printf '%s\n' "$link"
		else
			local base
			base=/var/tmp/user-api-dev-$(printf '%s' "$RUN_DIR" | sha1sum | cut -c1-12)
			mkdir -p "$base" && chmod 755 "$base"
			ln -s "$base/$1" "$link"
			printf '%s\n' "$base/$1"
		fi
	fi
}

pg_datadir() { PGDATA_DIR=$(pg_datadir_of pg); }
ferret_pg_datadir() { FERRET_PGDATA=$(pg_datadir_of ferretdb-pg); }

# pg_initdb DIR LOGNAME [TCP]: a new cluster whose superuser is `postgres`, trusted on the unix
# socket in the data folder, which only the owner of the data can reach, and without a password.
# With TCP (the application's cluster), password authentication over TCP (scram), which the
# processes' roles use and the superuser cannot (it has no password); without, no TCP login at all.
pg_initdb() {
	local dir=$1 name=$2 auth_host=reject
	mkdir -p "$dir"
	is_root && chown postgres:postgres "$dir"
	chmod 700 "$dir"
	"${AS_PG[@]}" test -w "$dir" ||
		die "the postgres user cannot write $dir: remove it (deploy/infra.sh clean-data) and retry"
	say "initialising PostgreSQL data in $dir"
	[[ ${3:-} != tcp ]] || auth_host=scram-sha-256
	if ! "${AS_PG[@]}" "$PG_BIN/initdb" -D "$dir" -U postgres -E UTF8 \
		--locale=C.UTF-8 --auth-local=trust --auth-host="$auth_host" >>"$RUN_DIR/logs/$name.log" 2>&1; then
		log_tail "$name"
		die "initdb failed in $dir"
	fi
}

# psql as the superuser on the unix socket of the application's cluster.
pg_psql() {
	"$PG_BIN/psql" -X -q -h "$PGDATA_DIR" -p "$POSTGRES_PORT" -U postgres -v ON_ERROR_STOP=1 "$@"
}

# The roles of migrations/0008_roles.sql, created when missing (a cluster made before them) and
# given their passwords from .run/secrets on every start, so that the files and the server agree;
# the database, owned by user_sync_owner. The SQL goes to psql on stdin: no password in argv.
# A superuser with a password (the stack before the roles gave `postgres` the password postgres)
# loses it: the superuser logs in on the unix socket only.
pg_setup() {
	local role pw sql='' supers
	for role in "${PG_ROLES[@]}"; do
		pw=$(run_secret "postgres-$role") || return 1
		sql+="SELECT 'CREATE ROLE $role LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') \gexec"$'\n'
		sql+="ALTER ROLE $role WITH LOGIN PASSWORD '$pw';"$'\n'
	done
	supers=$(pg_psql -d postgres -At -c \
		"SELECT string_agg(rolname, ', ') FROM pg_authid WHERE rolsuper AND rolpassword IS NOT NULL") || return 1
	if [[ -n $supers ]]; then
		say "removing the password of superuser $supers: it logs in on the unix socket only (psql -h $PGDATA_DIR -p $POSTGRES_PORT -U postgres)"
		sql+="SELECT format('ALTER ROLE %I PASSWORD NULL', rolname) FROM pg_authid WHERE rolsuper AND rolpassword IS NOT NULL \gexec"$'\n'
	fi
	pg_psql -d postgres -v db="$POSTGRES_DB" >/dev/null <<-SQL
		$sql
		SELECT format('CREATE DATABASE %I OWNER user_sync_owner', :'db')
		 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
		SELECT format('ALTER DATABASE %I OWNER TO user_sync_owner', :'db')
		 WHERE (SELECT datdba FROM pg_database WHERE datname = :'db') <> 'user_sync_owner'::regrole \gexec
	SQL
}

# bin/migrate up as user_sync_owner (.run/migrate.env). A database whose tables still belong to
# another role (migrated before the roles existed, by the superuser) is first migrated once as the
# superuser on the unix socket: the migration that creates the roles hands the tables over.
pg_migrate() {
	local mode=$1 out=$RUN_DIR/logs/migrate.log fd
	[[ -x $BIN_DIR/migrate ]] || die "${BIN_DIR#"$REPO_ROOT"/}/migrate is not built: build it with make"
	log_rotate migrate
	if [[ $mode == fg ]]; then
		exec {fd}> >(log_label migrate)
	else
		exec {fd}>>"$out"
	fi
	if ((PG_LOCAL)) && [[ $(pg_psql -d "$POSTGRES_DB" -At -c "SELECT EXISTS (SELECT FROM pg_class
		WHERE oid IN (to_regclass('public.users'), to_regclass('public.schema_migrations'))
		AND relowner <> 'user_sync_owner'::regrole)") == t ]]; then
		say "handing the schema to user_sync_owner: bin/migrate up as the superuser, this once"
		if ! (POSTGRES_HOST=$PGDATA_DIR POSTGRES_USER=postgres POSTGRES_PASSWORD='' \
			exec "$BIN_DIR/migrate" up) </dev/null >&"$fd" 2>&1; then
			exec {fd}>&-
			return 1
		fi
	fi
	say "applying migrations (bin/migrate up as ${PG_ROLES[migrate]})"
	# shellcheck source=/dev/null # written by infra_env_files at every start
	if ! (set -a && . "$RUN_DIR/migrate.env" && set +a && exec "$BIN_DIR/migrate" up) </dev/null >&"$fd" 2>&1; then
		exec {fd}>&-
		return 1
	fi
	exec {fd}>&-
}

# --- secrets and the processes' environment files ---------------------------------------------

# The PostgreSQL role of each process that uses PostgreSQL (migrations/0008_roles.sql, common/pg.h).
declare -A PG_ROLES=([migrate]=user_sync_owner [user-api]=user_sync_api
	[outbox-relay]=user_sync_relay [audit]=user_sync_audit)
# The processes that get a .run/<process>.env.
ENV_PROCESSES=(user-api outbox-relay notification-consumer migrate audit)

# run_secret NAME: prints .run/secrets/NAME, made on first use (48 random hex digits, mode 0600)
# and kept, so that it stays the same across restarts.
run_secret() {
	local dir=$RUN_DIR/secrets f=$RUN_DIR/secrets/$1
	if [[ ! -s $f ]]; then
		mkdir -p "$dir" && chmod 700 "$dir" || return 1
		(umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$f.tmp" && mv -f "$f.tmp" "$f") ||
			{ warn "could not write $f"; return 1; }
	fi
	cat "$f"
}

# env_line KEY VALUE: one line of an environment file. A value of plain characters is written as
# it is; any other in single quotes, which both systemd's EnvironmentFile and the shell's `.` take
# literally. A value with a quote or a line break in it cannot be written so: refused.
env_line() {
	case $2 in
	*"'"* | *$'\n'*) die "$1 holds a quote or a line break, which an environment file cannot carry" ;;
	esac
	if [[ $2 =~ ^[A-Za-z0-9_./:@%+,=-]*$ ]]; then
		printf '%s=%s\n' "$1" "$2"
	else
		printf "%s='%s'\n" "$1" "$2"
	fi
}

# pg_env PROCESS: how PROCESS reaches PostgreSQL. The local server as its own role, with its
# password; a server of the user's (POSTGRES_HOST set) with the user's settings, as its own role
# unless POSTGRES_USER names another, and no password unless POSTGRES_PASSWORD gives one (libpq
# then reads PGPASSWORD or ~/.pgpass).
pg_env() {
	local role=${PG_ROLES[$1]} pw v
	if ((PG_LOCAL)); then
		pw=$(run_secret "postgres-$role") || die "could not read the password of $role"
		env_line POSTGRES_HOST 127.0.0.1
		env_line POSTGRES_PORT "$POSTGRES_PORT"
		env_line POSTGRES_DB "$POSTGRES_DB"
		env_line POSTGRES_USER "$role"
		env_line POSTGRES_PASSWORD "$pw"
	else
		env_line POSTGRES_HOST "$POSTGRES_HOST"
		env_line POSTGRES_PORT "$POSTGRES_PORT"
		env_line POSTGRES_DB "$POSTGRES_DB"
		env_line POSTGRES_USER "${POSTGRES_USER:-$role}"
		[[ -z ${POSTGRES_PASSWORD:-} ]] || env_line POSTGRES_PASSWORD "$POSTGRES_PASSWORD"
	fi
	for v in POSTGRES_SSLMODE POSTGRES_SSLROOTCERT POSTGRES_SSLCERT POSTGRES_SSLKEY; do
		[[ -z ${!v:-} ]] || env_line "$v" "${!v}"
	done
}

# nats_env PROCESS: how PROCESS reaches NATS: the local server as its own user (deploy/
# nats-server.conf has one per service), with the file of its password; a server of the user's
# (NATS_URL set) with the user's own NATS_* settings.
nats_env() {
	local v
	if ((NATS_LOCAL)); then
		env_line NATS_URL "nats://127.0.0.1:$NATS_PORT"
		env_line NATS_USER "$1"
		env_line NATS_PASSWORD_FILE "$NATS_AUTH_DIR/$1.password"
		return
	fi
	env_line NATS_URL "$NATS_URL"
	for v in NATS_USER NATS_PASSWORD_FILE NATS_CREDS_FILE NATS_NKEY_SEED_FILE NATS_TLS NATS_TLS_CA \
		NATS_TLS_CERT NATS_TLS_KEY; do
		[[ -z ${!v:-} ]] || env_line "$v" "${!v}"
	done
}

# mongo_env: how a process reaches MongoDB (FerretDB when it is ours).
mongo_env() {
	env_line MONGODB_URI "${MONGODB_URI:-mongodb://127.0.0.1:$MONGODB_PORT/}"
}

# http_env: the bearer tokens of the HTTP ports, when the caller of make run or make infra named a
# file (README, Security); without it the services listen on loopback only, unauthenticated.
http_env() {
	[[ -z ${API_TOKENS_FILE:-} ]] || env_line API_TOKENS_FILE "$(realpath -- "$API_TOKENS_FILE")"
}

# process_env PROCESS: the lines of PROCESS's environment file, one function per dependency.
process_env() {
	case $1 in
	user-api) pg_env "$1" && nats_env "$1" && http_env && env_line USER_API_PORT "$USER_API_PORT" ;;
	outbox-relay)
		pg_env "$1" && nats_env "$1" && http_env && env_line OUTBOX_RELAY_PORT "$OUTBOX_RELAY_PORT" ;;
	notification-consumer)
		nats_env "$1" && mongo_env && http_env &&
			env_line NOTIFICATION_CONSUMER_PORT "$NOTIFICATION_CONSUMER_PORT" ;;
	migrate) pg_env "$1" ;;
	audit) pg_env "$1" && mongo_env && http_env && env_line AUDIT_PORT "$AUDIT_PORT" ;;
	*) die "no environment file for '$1'" ;;
	esac
}

# env_file_write PROCESS: writes .run/PROCESS.env (mode 0600) from process_env, replacing it whole.
env_file_write() {
	local tmp
	tmp=$(mktemp "$RUN_DIR/.$1.env.XXXXXX") || return 1
	if ! (printf '# %s: written by deploy/infra.sh at every start of make run or make infra\n' "$1" &&
		process_env "$1") >"$tmp"; then
		rm -f "$tmp"
		return 1
	fi
	mv -f "$tmp" "$RUN_DIR/$1.env"
}

infra_env_files() {
	local p
	for p in "${ENV_PROCESSES[@]}"; do
		env_file_write "$p" || die "could not write ${RUN_DIR#"$REPO_ROOT"/}/$p.env"
	done
}

# --- FerretDB's store ----------------------------------------------------------------------------

# FerretDB keeps its data in PostgreSQL (its postgresql handler), in a cluster of its own so that
# the copy and the application's database are separate dependencies, as a real MongoDB would be.
# That cluster listens on no TCP port: FerretDB reaches it on the unix socket in its data folder,
# as the role ferretdb, which owns the database ferretdb and nothing else. The number only names
# the socket file (.s.PGSQL.5432), so it cannot clash with anything.
FERRET_PG_PORT=5432
# FerretDB's connection pool and its store's connection limit (see ferret_pg_url).
FERRET_POOL_MAX_CONNS=600
FERRET_PG_MAX_CONNECTIONS=700

# The stack before this one kept the copy in FerretDB's SQLite store (.run/ferretdb/*.sqlite),
# which FerretDB on PostgreSQL would not read: it would start with an empty copy while the
# consumer's durable position says every event was applied. Refuse, in one line.
ferret_check_old_store() {
	compgen -G "$RUN_DIR/ferretdb/*.sqlite" >/dev/null || return 0
	die "${RUN_DIR#"$REPO_ROOT"/}/ferretdb holds the copy in FerretDB's old SQLite store, which is no longer used (the copy now lives in PostgreSQL): 'make clean-data' removes the dev data (users, stream, copy) and starts afresh"
}

# Role, database and deploy/ferretdb-store.sql (the GIN index on every collection's _id, the
# planner setting), on every start: all of it is idempotent, and FerretDB starts after it.
ferret_store_setup() {
	local psql=("$PG_BIN/psql" -X -q -h "$FERRET_PGDATA" -p "$FERRET_PG_PORT" -U postgres -v ON_ERROR_STOP=1)
	PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d postgres >/dev/null <<-'SQL' || return 1
		SELECT 'CREATE ROLE ferretdb LOGIN'
		 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ferretdb') \gexec
		SELECT 'CREATE DATABASE ferretdb OWNER ferretdb'
		 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ferretdb') \gexec
	SQL
	PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d ferretdb \
		-f "$REPO_ROOT/deploy/ferretdb-store.sql" >/dev/null
}

# FerretDB's --postgresql-url: the socket folder goes in the host parameter, percent-encoded.
ferret_pg_url() {
	local LC_ALL=C s=$FERRET_PGDATA out='' c i
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in
		[A-Za-z0-9/._~-]) out+=$c ;;
		*) printf -v c '%%%02X' "'$c" && out+=$c ;;
		esac
	done
	# pool_max_conns: FerretDB 1.24 holds a connection for every write of an update command that
	# matches a document until the command ends, and stops answering when its pool (50 by
	# default) runs out; the consumer's lanes have up to CONSUMER_LANES x CONSUMER_BATCH such
	# writes in flight (256 by default, 512 with 8 lanes).
	printf 'postgres://ferretdb@/ferretdb?host=%s&port=%s&pool_max_conns=%s\n' "$out" \
		"$FERRET_PG_PORT" "$FERRET_POOL_MAX_CONNS"
}

# --- NATS users ---------------------------------------------------------------------------------

# The users of deploy/nats-server.conf: one per service and admin, for people. Their passwords
# are made once, into .run/nats-auth/<user>.password (mode 0600, the folder 0700): nats-server
# gets them in its environment (NATS_PASSWORD_<USER>, which its configuration reads), each
# service reads its own file (NATS_USER, NATS_PASSWORD_FILE), a person admin's.
NATS_USERS=(user-api outbox-relay notification-consumer admin)
NATS_AUTH_DIR=$RUN_DIR/nats-auth

nats_password_var() {
	local v=${1^^}
	printf 'NATS_PASSWORD_%s\n' "${v//-/_}"
}

# 32 letters and digits, the first a letter: nats-server parses the value of a variable, and one
# that looks like a number or a boolean would not be a password.
nats_new_password() {
	local s
	s=$(head -c 1024 /dev/urandom | LC_ALL=C tr -dc 'A-Za-z0-9')
	s=${s#"${s%%[A-Za-z]*}"}
	((${#s} >= 32)) || return 1
	printf '%s\n' "${s:0:32}"
}

nats_auth_setup() {
	local u f
	(umask 077 && mkdir -p "$NATS_AUTH_DIR") || die "could not create $NATS_AUTH_DIR"
	for u in "${NATS_USERS[@]}"; do
		f=$NATS_AUTH_DIR/$u.password
		[[ -s $f ]] && continue
		(umask 077 && nats_new_password >"$f.tmp" && mv -f "$f.tmp" "$f") ||
			die "could not write the NATS password of $u to $f"
		say "made the NATS password of $u in ${f#"$REPO_ROOT"/}"
	done
}

# Exports the passwords for nats-server (set), or takes them out of our environment again (unset),
# so that no other process we start inherits them.
nats_auth_env() {
	local u
	for u in "${NATS_USERS[@]}"; do
		if [[ $1 == set ]]; then
			export "$(nats_password_var "$u")=$(<"$NATS_AUTH_DIR/$u.password")"
		else
			unset "$(nats_password_var "$u")"
		fi
	done
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
	postgres | ferretdb-pg) [[ $exe == *postgres\ -D\ * ]] ;;
	nats) [[ $exe == *nats-server* ]] ;;
	ferretdb) [[ $exe == *ferretdb\ --handler=* ]] ;;
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
	ferretdb-pg) "$PG_BIN/pg_isready" -q -h "$FERRET_PGDATA" -p "$FERRET_PG_PORT" -t 1 ;;
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
	((MONGO_LOCAL)) && ferret_check_old_store
	if ((PG_LOCAL)) && [[ -n ${POSTGRES_USER:-}${POSTGRES_PASSWORD:-} ]]; then
		warn "POSTGRES_USER and POSTGRES_PASSWORD are not used with the local PostgreSQL: each process logs in as its own role (${RUN_DIR#"$REPO_ROOT"/}/<process>.env)"
	fi
	infra_env_files
	if ((PG_LOCAL)); then
		pg_datadir
		log_rotate postgres
		[[ -s $PGDATA_DIR/PG_VERSION ]] || pg_initdb "$PGDATA_DIR" postgres tcp
		spawn "$mode" postgres "${AS_PG[@]}" "$PG_BIN/postgres" -D "$PGDATA_DIR" -p "$POSTGRES_PORT" \
			-c listen_addresses=127.0.0.1 -c unix_socket_directories="$PGDATA_DIR"
	fi
	if ((NATS_LOCAL)); then
		mkdir -p "$RUN_DIR/nats"
		log_rotate nats
		nats_auth_setup
		nats_auth_env set
		spawn "$mode" nats "$NATS_SERVER" -c "$REPO_ROOT/deploy/nats-server.conf" -js -a 127.0.0.1 \
			-p "$NATS_PORT" -m "$NATS_MONITOR_PORT" \
			-sd "$RUN_DIR/nats" -n user-api-dev
		nats_auth_env unset
	fi
	if ((MONGO_LOCAL)); then
		ferret_pg_datadir
		log_rotate ferretdb-pg
		[[ -s $FERRET_PGDATA/PG_VERSION ]] || pg_initdb "$FERRET_PGDATA" ferretdb-pg
		spawn "$mode" ferretdb-pg "${AS_PG[@]}" "$PG_BIN/postgres" -D "$FERRET_PGDATA" -p "$FERRET_PG_PORT" \
			-c listen_addresses= -c unix_socket_directories="$FERRET_PGDATA" \
			-c max_connections="$FERRET_PG_MAX_CONNECTIONS"
	fi

	local ok=1
	((PG_LOCAL)) && { infra_wait_ready postgres 120 && pg_setup || ok=0; }
	((ok && NATS_LOCAL)) && { infra_wait_ready nats 30 || ok=0; }
	if ((ok && MONGO_LOCAL)); then
		if infra_wait_ready ferretdb-pg 120 && ferret_store_setup; then
			mkdir -p "$RUN_DIR/ferretdb"
			log_rotate ferretdb
			# --debug-addr=- : its debug HTTP listener defaults to the fixed port 8088, which we
			# do not need and which would clash with anything else there.
			spawn "$mode" ferretdb "$FERRETDB" --handler=postgresql --postgresql-url="$(ferret_pg_url)" \
				--listen-addr="127.0.0.1:$MONGODB_PORT" --state-dir="$RUN_DIR/ferretdb" --debug-addr=- \
				--telemetry=disable --log-level=info
			infra_wait_ready ferretdb 30 || ok=0
		else
			((INFRA_STOP_REQUESTED)) || say "could not set up FerretDB's database in $FERRET_PGDATA"
			ok=0
		fi
	fi
	if ((ok)) && ! pg_migrate "$mode"; then
		((INFRA_STOP_REQUESTED)) || say "migrations failed (bin/migrate up): see the [migrate] lines or ${RUN_DIR#"$REPO_ROOT"/}/logs/migrate.log"
		ok=0
	fi
	if ((!ok)); then
		infra_stop
		return 1
	fi

	local rel=${RUN_DIR#"$REPO_ROOT"/}
	if ((PG_LOCAL)); then
		say "postgres  at postgresql://127.0.0.1:$POSTGRES_PORT/$POSTGRES_DB (data $PGDATA_DIR; a role per process, passwords in $rel/secrets)"
	else
		say "postgres  external at ${POSTGRES_HOST}:$POSTGRES_PORT (POSTGRES_HOST is set): not started"
	fi
	if ((NATS_LOCAL)); then
		say "nats      at nats://127.0.0.1:$NATS_PORT (monitor http://127.0.0.1:$NATS_MONITOR_PORT, store $rel/nats; users ${NATS_USERS[*]}, passwords in $rel/nats-auth)"
	else
		say "nats      external at $NATS_URL (NATS_URL is set): not started"
	fi
	if ((MONGO_LOCAL)); then
		say "ferretdb  at mongodb://127.0.0.1:$MONGODB_PORT/ (PostgreSQL store: database ferretdb in $FERRET_PGDATA, unix socket only)"
	else
		say "mongodb   external at $MONGODB_URI (MONGODB_URI is set): FerretDB not started"
	fi
	say "settings  of each process in $rel/<process>.env (${ENV_PROCESSES[*]}); by hand: (set -a; . $rel/user-api.env; set +a; exec bin/user-api)"
}

# Stops the components this process started; with --pidfiles also those that .run/pids
# names (the `stop` action, for a `start` in the background or a run in another terminal).
infra_stop() {
	local n pid
	for n in ferretdb ferretdb-pg nats postgres; do
		pid=${INFRA_PIDS[$n]:-}
		if [[ -z $pid && ${1:-} == --pidfiles ]]; then
			pid=$(pidfile_pid "$n") || { rm -f "$RUN_DIR/pids/$n.pid"; continue; }
		fi
		[[ -n $pid ]] || continue
		unset "INFRA_PIDS[$n]"
		if pid_alive "$pid"; then
			say "stopping $n (pid $pid)"
			if [[ $n == postgres || $n == ferretdb-pg ]]; then
				local dir
				if [[ $n == postgres ]]; then
					[[ -n ${PGDATA_DIR:-} ]] || pg_datadir
					dir=$PGDATA_DIR
				else
					[[ -n ${FERRET_PGDATA:-} ]] || ferret_pg_datadir
					dir=$FERRET_PGDATA
				fi
				# Fast shutdown: roll back open transactions, checkpoint, exit.
				"${AS_PG[@]}" "$PG_BIN/pg_ctl" stop -D "$dir" -m fast -w -t 60 >/dev/null 2>&1 || true
				pid_stop "$n" "$pid" INT 30
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
	local name dir
	for name in pg ferretdb-pg; do
		[[ -e $RUN_DIR/$name ]] || continue
		dir=$(pg_datadir_of "$name")
		if [[ -f $dir/postmaster.pid ]] &&
			pid=$(head -n 1 "$dir/postmaster.pid") && pid_alive "$pid"; then
			die "a PostgreSQL server (pid $pid) still uses $dir: stop it first"
		fi
	done
	for name in pg ferretdb-pg; do
		[[ -L $RUN_DIR/$name ]] || continue
		dir=$(pg_datadir_of "$name")
		case $dir in
		/var/tmp/user-api-dev-*/"$name")
			# The folder above goes too once it is empty.
			if rm -rf "$dir"; then rmdir "${dir%/"$name"}" 2>/dev/null || true; fi ;;
		*) warn "not removing $dir (.run/$name points there, outside /var/tmp/user-api-dev-*)" ;;
		esac
	done
	rm -rf "$RUN_DIR/pg" "$RUN_DIR/ferretdb-pg" "$RUN_DIR/nats" "$RUN_DIR/ferretdb" "$RUN_DIR/logs" "$RUN_DIR/pids"
	say "removed the data in ${RUN_DIR#"$REPO_ROOT"/} (PostgreSQL, NATS, FerretDB and its PostgreSQL) and the logs"
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
