# shellcheck shell=bash
# Shared helpers for the deploy scripts: paths, messages, tool lookup, processes and ports.
# Sourced by bootstrap.sh, infra.sh and run.sh; never run on its own.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TOOLS_DIR=$REPO_ROOT/.tools
# RUN_DIR moves the data, logs and pids of make run / make infra (the README test uses its own).
RUN_DIR=${RUN_DIR:-$REPO_ROOT/.run}
: "${LOG_TAG:=deploy}"

# Pinned tool versions, used by bootstrap.sh. The harness (test/integration/harness.py) does
# not read them: it only looks the tools up, with tools_find below.
# shellcheck disable=SC2034 # used by bootstrap.sh
{
	FERRETDB_MODULE=github.com/FerretDB/FerretDB
	FERRETDB_VERSION=v1.24.2
	NATS_MODULE=github.com/nats-io/nats-server/v2
	NATS_VERSION=v2.15.2
	# The NATS CLI (`nats`) and the MongoDB shell (`mongosh`), for the README's debugging
	# commands. natscli stays at v0.5.0, not v0.5.1: v0.5.0 is what the module proxy we build from
	# serves.
	NATSCLI_MODULE=github.com/nats-io/natscli/nats
	NATSCLI_VERSION=v0.5.0
	MONGOSH_VERSION=2.12.0
	# The Go toolchain bootstrap fetches when the machine has no Go >= 1.21 (Debian 12 has 1.19).
	GO_TOOLCHAIN=go1.26.8
}

say() { printf '%s: %s\n' "$LOG_TAG" "$*"; }
warn() { printf '%s: warning: %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }

# Prefix that runs a command as the unprivileged `postgres` user when we are root (PostgreSQL
# refuses to run as root), as ourselves otherwise: "${AS_PG[@]}" initdb ... setpriv execs in
# place, so the pid that `&` reports is the pid of the command itself, which the stop logic
# relies on.
# shellcheck disable=SC2034
if [[ $(id -u) -eq 0 ]]; then
	AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
else
	AS_PG=(env)
fi

# Newest /usr/lib/postgresql/<n>/bin that holds a server.
pg_bin_search() {
	local d best='' dirs=()
	# The glob sorts 10 before 9; sort -V puts the newest last.
	mapfile -t dirs < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V)
	for d in "${dirs[@]}"; do
		[[ -x $d/postgres && -x $d/initdb && -x $d/pg_ctl ]] && best=$d
	done
	if [[ -z $best ]]; then
		d=$(command -v initdb 2>/dev/null) && d=$(dirname "$d") &&
			[[ -x $d/postgres && -x $d/pg_ctl ]] && best=$d
	fi
	[[ -n $best ]] && printf '%s\n' "$best"
}

# First executable among the arguments, or nothing.
first_exe() {
	local f
	for f in "$@"; do
		[[ -n $f && -f $f && -x $f ]] && { printf '%s\n' "$f"; return 0; }
	done
	return 1
}

# The project's one tool lookup: deploy/*.sh and bench/run.sh call tools_load, and
# test/integration/harness.py runs tools_find and tools_print. Fills PG_BIN, NATS_SERVER and
# FERRETDB, each from the environment if set there, else from .tools/env.sh (written by
# bootstrap.sh), else by the same search bootstrap.sh does; one that cannot be found is left empty.
tools_find() {
	local pg=${PG_BIN:-} nats=${NATS_SERVER:-} ferret=${FERRETDB:-}
	# shellcheck disable=SC1091
	[[ -f $TOOLS_DIR/env.sh ]] && . "$TOOLS_DIR/env.sh"
	if [[ -n $pg && -x $pg/postgres ]]; then
		PG_BIN=$pg
	elif [[ -z ${PG_BIN:-} || ! -x ${PG_BIN:-}/postgres ]]; then
		PG_BIN=$(pg_bin_search) || PG_BIN=
	fi
	NATS_SERVER=$(first_exe "$nats" "${NATS_SERVER:-}" "$TOOLS_DIR/bin/nats-server" \
		"$(command -v nats-server 2>/dev/null)") || NATS_SERVER=
	FERRETDB=$(first_exe "$ferret" "${FERRETDB:-}" "$TOOLS_DIR/bin/ferretdb" \
		"$(command -v ferretdb 2>/dev/null)") || FERRETDB=
}

# tools_find, then dies naming a tool that is missing; exports PG_BIN, NATS_SERVER and FERRETDB.
tools_load() {
	tools_find
	[[ -n $PG_BIN ]] ||
		die "no PostgreSQL server found (looked in /usr/lib/postgresql/*/bin): run deploy/bootstrap.sh"
	[[ -n $NATS_SERVER ]] || die "nats-server not found: run deploy/bootstrap.sh"
	[[ -n $FERRETDB ]] || die "ferretdb not found: run deploy/bootstrap.sh"
	export PG_BIN NATS_SERVER FERRETDB
}

# What tools_find found, one NAME=path line each (an empty path: not found).
tools_print() {
	printf 'PG_BIN=%s\nNATS_SERVER=%s\nFERRETDB=%s\n' "$PG_BIN" "$NATS_SERVER" "$FERRETDB"
}

# True when something accepts TCP connections on 127.0.0.1:$1. A listener on 0.0.0.0 or on
# 127.0.0.1 both answer here, and either would make our bind fail.
port_in_use() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# port_check PORT VAR WHAT: dies with a message naming the variable that moves WHAT.
port_check() {
	if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
		die "$2=$1 is not a port number"
	fi
	if port_in_use "$1"; then
		die "port $1 is in use: set $2 to move $3"
	fi
}

# True if the process exists and is not a zombie (an exited child we have not reaped yet
# still answers `kill -0`).
pid_alive() {
	local s
	[[ -n $1 ]] || return 1
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[[ ${s%% *} != Z ]]
}

# pid_wait_gone PID SECONDS: true once PID has gone, false if still there after SECONDS.
pid_wait_gone() {
	local pid=$1 deadline=$((SECONDS + $2))
	while pid_alive "$pid"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
	return 0
}

# pid_stop NAME PID SIGNAL SECONDS: signal, wait, then SIGKILL with a loud line if needed.
pid_stop() {
	local name=$1 pid=$2 sig=$3 secs=$4
	pid_alive "$pid" || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	if ! pid_wait_gone "$pid" "$secs"; then
		warn "$name (pid $pid) did not stop within ${secs}s of SIG$sig: killing it"
		kill -KILL "$pid" 2>/dev/null || true
		pid_wait_gone "$pid" 5 || true
	fi
	wait "$pid" 2>/dev/null || true
}

# Copies a process's output to .run/logs/NAME.log and to stdout with a "[NAME] " prefix.
# Used as `cmd > >(log_label NAME) 2>&1`. It ignores SIGINT, so a Ctrl-C in the terminal
# does not cut the last lines of a process that is still shutting down; it ends at EOF.
log_label() {
	trap '' INT
	tee -a "$RUN_DIR/logs/$1.log" | sed -u "s/^/[$1] /"
}

# Last lines of a component's log, for a message about why it failed.
log_tail() {
	local f=$RUN_DIR/logs/$1.log
	[[ -f $f ]] || return 0
	printf '%s: last lines of %s:\n' "$LOG_TAG" "${f#"$REPO_ROOT"/}" >&2
	tail -n "${2:-20}" "$f" | sed 's/^/    /' >&2
}
