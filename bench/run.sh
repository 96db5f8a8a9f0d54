#!/usr/bin/env bash
# `make bench`: builds the baseline programs of bench/src, installs wrk when it is missing, and runs
# every scenario (bench/bench.py), which writes bench/results/results.md and results.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
	echo "bench: wrk is missing; installing the Debian package wrk" >&2
	if [ "$(id -u)" -eq 0 ]; then
		apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
	else
		sudo apt-get install -y wrk >/dev/null
	fi
fi

# PostgreSQL, nats-server and FerretDB as deploy/*.sh and the harness find them (PG_BIN, NATS_SERVER,
# FERRETDB); bench.py runs pgbench from PG_BIN.
LOG_TAG=bench
# shellcheck source=deploy/lib.sh
. deploy/lib.sh
tools_load
if [ ! -x "$PG_BIN/pgbench" ]; then
	echo "bench: pgbench not found (Debian package postgresql-15 or postgresql-client-15)" >&2
	exit 1
fi

# The baselines, with the project's compiler flags.
mkdir -p bench/bin
pkgs=(libpq libmongoc-1.0 libnats)
# pkg-config prints the flags on one line, separated by spaces.
read -ra cflags <<<"$(pkg-config --cflags "${pkgs[@]}")"
read -ra libs <<<"$(pkg-config --libs "${pkgs[@]}")"
for src in bench/src/*.c; do
	out="bench/bin/$(basename "$src" .c)"
	if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ bench/src/bench_util.h -nt "$out" ]; then
		${CC:-cc} -std=c17 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Wshadow -Wmissing-prototypes \
		    -Wstrict-prototypes ${WERROR:+-Werror} "${cflags[@]}" -o "$out" "$src" "${libs[@]}" -lpthread
	fi
done

py=.venv/bin/python
[ -x "$py" ] || py=python3
exec "$py" bench/bench.py
