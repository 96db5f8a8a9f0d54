#!/usr/bin/env bash
# Installs what building, running and testing need, and only what is missing; a fast no-op
# when everything is present. `make run` and `make test` call it first.
#
# Pieces: Debian packages (compiler, C libraries, PostgreSQL, curl, wrk for the benchmarks and
# their smoke test, clang with libFuzzer for the fuzz targets, promtool, shellcheck for the
# scripts' test), nats-server, FerretDB and the NATS CLI (`nats`) pinned and built from the Go
# module proxy into .tools/bin, mongosh pinned and installed with npm (Debian's nodejs and npm when
# the machine has no node or npm) into .tools/lib/node_modules with its link in .tools/bin, the
# Python test venv in .venv.
# It ends by writing .tools/env.sh (PG_BIN, NATS_SERVER, FERRETDB, GO, PATH), which the other
# deploy scripts source and test/integration/harness.py reads.
set -euo pipefail
LOG_TAG=bootstrap
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# clang and libclang-rt-14-dev (libFuzzer's runtime, which clang only recommends) build the fuzz
# targets of test/fuzz/. prometheus brings promtool, which checks and unit-tests the alerting rules
# of deploy/observability/ (Debian packages it with the server only); shellcheck checks the shell
# scripts (test/integration/test_shellcheck.py).
APT_PKGS=(build-essential make pkg-config libpq-dev libmongoc-dev libbson-dev libnats-dev
	libjansson-dev libmicrohttpd-dev libgnutls28-dev uuid-dev postgresql postgresql-client curl
	ca-certificates openssl wrk clang libclang-rt-14-dev prometheus shellcheck)
REQUIREMENTS=$REPO_ROOT/test/requirements.txt
VENV=$REPO_ROOT/.venv
GO_LOG=$TOOLS_DIR/go-build.log
APT_LOG=$TOOLS_DIR/apt.log
NPM_LOG=$TOOLS_DIR/npm.log
# Where a Go is looked for besides PATH (the test of these steps points them elsewhere).
GO_PLACES=${GO_PLACES-/usr/local/go/bin/go $HOME/go/bin/go $HOME/sdk/go/bin/go}
GO_OLD_PLACES=${GO_OLD_PLACES-/usr/lib/go/bin/go /usr/lib/go-1.*/bin/go}
# Set when Go could not build nats-server and Debian's older package stands in; removing the
# file makes the next run try Go again.
NATS_FALLBACK_MARK=$TOOLS_DIR/nats-server.fallback

changed=0
notes=()

# --- Debian packages -------------------------------------------------------------------------

# Prints, one a line, the packages among "$@" that dpkg does not list as installed ("ii").
# dpkg-query exits 1 when it has never heard of one of them, which is the normal case on a
# fresh machine, and still prints the ones it knows: its status must not end this function
# (set -e) or hide the answer. An empty answer is trusted only because the loop below asks
# about every package by name; what dpkg-query does not print is missing.
apt_missing() {
	local have
	have=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null) || true
	have=$(awk '$2 == "ii" { print $1 }' <<<"$have")
	local p
	for p in "$@"; do
		grep -qxF -- "$p" <<<"$have" || printf '%s\n' "$p"
	done
}

# Runs apt-get as root, or through sudo when it can run without a password; dies with the
# command to run by hand otherwise. Its output goes to $APT_LOG; the tail is shown on failure.
apt_run() {
	local sudo=()
	if ! is_root; then
		if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true >/dev/null 2>&1; then
			die "these Debian packages are missing: $APT_WANT
    installing them needs root (or sudo without a password). As root, run:
    apt-get update && apt-get install $APT_WANT"
		fi
		sudo=(sudo -n)
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 "$@" >>"$APT_LOG" 2>&1
}

apt_fail() { # what
	tail -n 8 "$APT_LOG" | sed 's/^/    /' >&2
	if grep -q 'Could not get lock' "$APT_LOG"; then
		die "$1: another package manager held the dpkg lock for 10 minutes; when it is done, rerun, or run: apt-get install $APT_WANT"
	fi
	die "$1 (full log: ${APT_LOG#"$REPO_ROOT"/})
    when the Debian archive can be reached, run: apt-get update && apt-get install $APT_WANT"
}

# Installs the packages and checks with dpkg that every one of them is installed now; a run
# that stops half-way leaves dpkg saying "not installed", so the next run tries again.
apt_install() {
	APT_WANT=$*
	mkdir -p "$(dirname "$APT_LOG")"
	: >"$APT_LOG"
	say "installing Debian packages: $*"
	apt_run update || apt_fail "apt-get update failed"
	apt_run install -y --no-install-recommends "$@" || apt_fail "could not install Debian packages: $*"
	local still
	still=$(apt_missing "$@")
	[[ -z $still ]] || apt_fail "apt-get install ended, but these packages are still not installed: ${still//$'\n'/ }"
	say "installed Debian packages: $*"
	changed=1
}

# The postgresql package creates and starts a cluster of its own on port 5432, which would
# then stand in the way of ours. Stop it, but only right after we installed the package:
# a cluster someone already had is theirs.
debian_cluster_stop() {
	command -v pg_lsclusters >/dev/null 2>&1 || return 0
	local ver name port status
	while read -r ver name port status _; do
		[[ $status == online* ]] || continue
		warn "stopping the Debian cluster $ver/$name that the postgresql package started on port $port"
		if is_root; then pg_ctlcluster "$ver" "$name" stop || true
		else sudo -n pg_ctlcluster "$ver" "$name" stop || true; fi
	done < <(pg_lsclusters -h 2>/dev/null)
}

# The prometheus package, wanted for promtool alone, comes with a Prometheus server on port 9090:
# its postinst enables and starts prometheus.service where systemd runs, and starts its init
# script through invoke-rc.d elsewhere, where a policy-rc.d may forbid it (Docker images do).
# Nothing here uses that server: right after we installed the package, stop it and keep it from
# starting at boot. One that was there before is someone else's. The places are variables for
# the test of this step.
SYSTEMD_RUN_DIR=${SYSTEMD_RUN_DIR-/run/systemd/system}
PROMETHEUS_INIT=${PROMETHEUS_INIT-/etc/init.d/prometheus}
debian_prometheus_stop() {
	local sudo=()
	is_root || sudo=(sudo -n)
	if [[ -d $SYSTEMD_RUN_DIR ]] && command -v systemctl >/dev/null 2>&1; then
		if systemctl is-active --quiet prometheus.service || systemctl is-enabled --quiet prometheus.service; then
			warn "stopping and disabling the prometheus service that the Debian package started (only its promtool is used)"
			"${sudo[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
		fi
	elif [[ -x $PROMETHEUS_INIT ]]; then
		if "$PROMETHEUS_INIT" status >/dev/null 2>&1; then
			warn "stopping the prometheus service that the Debian package started (only its promtool is used)"
			"${sudo[@]}" "$PROMETHEUS_INIT" stop >/dev/null 2>&1 || true
		fi
		command -v update-rc.d >/dev/null 2>&1 && { "${sudo[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true; }
	fi
	return 0
}

# The Python that builds the venv: $PYTHON, else Debian's (stable across sessions, which a
# version manager's shim is not), else whatever python3 is on PATH.
python_pick() {
	PY=$(first_exe "${PYTHON:-}" /usr/bin/python3 "$(command -v python3 2>/dev/null)") || PY=
}

packages_step() {
	local want=("${APT_PKGS[@]}")
	python_pick
	# Debian's python3 cannot make a venv with pip without python3-venv.
	if [[ -z $PY ]]; then
		want+=(python3 python3-venv)
	elif [[ $(readlink -f "$PY") == /usr/bin/* ]]; then
		want+=(python3-venv)
	fi
	if ! command -v dpkg-query >/dev/null 2>&1; then
		warn "not a Debian system: make sure these (or their equivalents) are installed: ${want[*]}"
		return 0
	fi
	local missing out
	out=$(apt_missing "${want[@]}") || die "could not ask dpkg which packages are installed"
	mapfile -t missing <<<"$out"
	[[ -n ${missing[0]:-} ]] || return 0
	apt_install "${missing[@]}"
	[[ " ${missing[*]} " == *" postgresql "* ]] && debian_cluster_stop
	[[ " ${missing[*]} " == *" prometheus "* ]] && debian_prometheus_stop
	[[ -n $PY ]] || python_pick
	[[ -n $PY ]] || die "python3 is still missing after installing it"
}

# --- Go tools ---------------------------------------------------------------------------------

# Debian 12's golang-go is Go 1.19: too old for both pins (FerretDB v1.24.2 declares go 1.24,
# nats-server v2.15.2 go 1.26.0), and too old to switch toolchains by itself (that came with
# Go 1.21). A Go >= 1.21 found on the machine is used as it is (it fetches the toolchain a
# module asks for through the module proxy if it has to). Without one, go_toolchain_fetch has
# an older Go (Debian's, installed if need be) download the Go toolchain module
# golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-amd64 from the module proxy, which is what
# Go >= 1.21 does itself when it switches, into .tools/go.
go_find() {
	if [[ -n $GO_WANTED ]]; then
		# An explicit GO is the only one tried.
		GO=$(first_exe "$GO_WANTED") || { GO=; return 1; }
		go_version_ok "$GO" || { GO=; return 1; }
		return 0
	fi
	local c
	# shellcheck disable=SC2086 # GO_PLACES is a list of paths
	for c in "$(command -v go 2>/dev/null)" $GO_PLACES "$TOOLS_DIR/go/bin/go"; do
		[[ -n $c && -x $c ]] || continue
		go_version_ok "$c" && { GO=$c; return 0; }
	done
	GO=
	return 1
}

# True when $1 runs and is Go >= 1.21; sets GO_VERSION. An older one is noted, not used.
go_version_ok() {
	local v
	v=$("$1" env GOVERSION 2>/dev/null) || { notes+=("$1 does not run: not used"); return 1; }
	GO_VERSION=$v
	v=${v#go}
	local major=${v%%.*} rest=${v#*.}
	local minor=${rest%%[.a-z]*}
	[[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || { notes+=("cannot read the version of $1 ($GO_VERSION): not used"); return 1; }
	if ((major < 1 || (major == 1 && minor < 21))); then
		notes+=("Go at $1 is $GO_VERSION, older than 1.21: used only to fetch $GO_TOOLCHAIN")
		return 1
	fi
}

# Any Go at all, however old, that can run `go mod download`.
go_any() {
	local p found=() newest=''
	# GO_OLD_PLACES is a list of globs: split and expanded on purpose; one that matches nothing
	# stays as it is written, and is dropped.
	for p in $GO_OLD_PLACES; do
		[[ -e $p ]] && found+=("$p")
	done
	((${#found[@]} == 0)) || newest=$(printf '%s\n' "${found[@]}" | sort -V | tail -n 1)
	first_exe "$(command -v go 2>/dev/null)" "$newest"
}

go_toolchain_fetch() {
	local old dir arch
	arch=$(uname -m)
	case $arch in
	x86_64) arch=amd64 ;;
	aarch64) arch=arm64 ;;
	*) die "no Go >= 1.21 found, and bootstrap fetches the Go toolchain only for amd64 and arm64 (this is $arch): install Go >= 1.21 into /usr/local/go and rerun" ;;
	esac
	old=$(go_any) || {
		say "no Go found: installing Debian's golang-go to fetch $GO_TOOLCHAIN with"
		apt_install golang-go
		old=$(go_any) || die "golang-go is installed but no go binary was found in /usr/lib/go/bin"
	}
	local mod=golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-$arch
	say "fetching the Go toolchain $GO_TOOLCHAIN with $("$old" version | awk '{print $3}') (go mod download $mod, from the Go module proxy)"
	local work
	work=$(mktemp -d "${TMPDIR:-/tmp}/go-toolchain.XXXXXX")
	dir=$(cd "$work" && go_env_clean "$old" mod download -json "$mod" 2>>"$GO_LOG" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') || true
	rm -rf "$work"
	[[ -n $dir && -f $dir/bin/go ]] || {
		tail -n 5 "$GO_LOG" | sed 's/^/    /' >&2
		die "could not fetch $mod from the Go module proxy (log: ${GO_LOG#"$REPO_ROOT"/}); install Go >= 1.21 into /usr/local/go and rerun"
	}
	# The module cache keeps files read-only and without their execute bits; copy and restore
	# them. A copy that stops half-way is never taken: it is renamed into place only when whole.
	rm -rf "$TOOLS_DIR/go.new"
	if ! { cp -R "$dir" "$TOOLS_DIR/go.new" && chmod -R u+w "$TOOLS_DIR/go.new" &&
		chmod +x "$TOOLS_DIR/go.new"/bin/* "$TOOLS_DIR/go.new"/pkg/tool/*/*; }; then
		die "could not copy the Go toolchain into ${TOOLS_DIR#"$REPO_ROOT"/}/go"
	fi
	rm -rf "$TOOLS_DIR/go" && mv "$TOOLS_DIR/go.new" "$TOOLS_DIR/go"
	go_version_ok "$TOOLS_DIR/go/bin/go" || die "the fetched Go toolchain in ${TOOLS_DIR#"$REPO_ROOT"/}/go does not run"
	GO=$TOOLS_DIR/go/bin/go
	changed=1
}

nats_version_ok() { [[ -x $1 && $("$1" --version 2>/dev/null) == "nats-server: $NATS_VERSION" ]]; }
# The output is read whole before matching: with pipefail, `| grep -q` could stop reading early
# and fail the check through the writer's SIGPIPE.
ferretdb_version_ok() { [[ -x $1 && $'\n'$("$1" --version 2>/dev/null)$'\n' == *$'\n'"version: $FERRETDB_VERSION"$'\n'* ]]; }

# The same pinned binary may already sit in the Go bin folder (an earlier `go install`);
# copying it saves a build. Only a binary that reports the pinned version is taken.
go_bin_candidates() {
	printf '%s\n' "${GOBIN:-}" "$HOME/go/bin"
	[[ -n ${GO:-} ]] && "$GO" env GOBIN GOPATH 2>/dev/null | sed -n '1{/./p};2{s|$|/bin|p}'
}

copy_if_pinned() { # name checkfn
	local d
	while read -r d; do
		[[ -n $d && $d != "$TOOLS_DIR/bin" ]] || continue
		if "$2" "$d/$1"; then
			cp "$d/$1" "$TOOLS_DIR/bin/$1.new" && mv "$TOOLS_DIR/bin/$1.new" "$TOOLS_DIR/bin/$1"
			say "copied $1 from $d (already the pinned version)"
			changed=1
			return 0
		fi
	done < <(go_bin_candidates)
	return 1
}

go_env_clean() { env -u GOFLAGS GOWORK=off "$@"; }

nats_step() {
	local bin=$TOOLS_DIR/bin/nats-server
	if nats_version_ok "$bin"; then NATS_SERVER=$bin; return 0; fi
	if [[ ! -f $NATS_FALLBACK_MARK ]]; then
		copy_if_pinned nats-server nats_version_ok && { NATS_SERVER=$bin; return 0; }
		if [[ -n ${GO:-} ]]; then
			say "building nats-server $NATS_VERSION with $GO_VERSION (go install, from the Go module proxy)"
			if (cd "$TOOLS_DIR" && go_env_clean GOBIN="$TOOLS_DIR/bin" "$GO" install "$NATS_MODULE@$NATS_VERSION") \
				>>"$GO_LOG" 2>&1 && nats_version_ok "$bin"; then
				NATS_SERVER=$bin
				changed=1
				return 0
			fi
			warn "could not build nats-server $NATS_VERSION (see ${GO_LOG#"$REPO_ROOT"/}):"
			tail -n 5 "$GO_LOG" | sed 's/^/    /' >&2
		else
			warn "no Go >= 1.21 found (looked on PATH and in /usr/local/go): cannot build nats-server $NATS_VERSION"
		fi
	fi
	# Fallback: Debian's nats-server (2.9 in Debian 12). It speaks JetStream with the same
	# flags, but is older than the pin.
	local deb
	deb=$(first_exe /usr/bin/nats-server /usr/sbin/nats-server) || {
		apt_install nats-server
		deb=$(first_exe /usr/bin/nats-server /usr/sbin/nats-server) ||
			die "nats-server is missing: install Go >= 1.21 (https://go.dev/dl) and rerun, or apt-get install nats-server"
	}
	[[ -f $NATS_FALLBACK_MARK ]] || { : >"$NATS_FALLBACK_MARK"; changed=1; }
	warn "using Debian's $("$deb" --version 2>/dev/null || echo nats-server) instead of the pinned $NATS_VERSION" \
		"(delete ${NATS_FALLBACK_MARK#"$REPO_ROOT"/} to try Go again)"
	NATS_SERVER=$deb
}

# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds a binary that panics
# at start: FerretDB reads its version from build/version/version.txt, a file its release
# process generates and the module zip does not carry. So we build the same module source,
# fetched from the module proxy, from a copy with that one file written. Nothing else differs.
ferretdb_build() {
	local work rc=0
	work=$(mktemp -d "${TMPDIR:-/tmp}/ferretdb-build.XXXXXX")
	ferretdb_build_in "$work" || rc=1
	rm -rf "$work"
	return $rc
}

ferretdb_build_in() {
	local out=$TOOLS_DIR/bin/ferretdb dir
	dir=$(cd "$1" && go_env_clean "$GO" mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION" 2>>"$GO_LOG" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') || true
	[[ -n $dir && -d $dir ]] || return 1
	cp -R "$dir/." "$1/src" && chmod -R u+w "$1/src" || return 1
	printf '%s\n' "$FERRETDB_VERSION" >"$1/src/build/version/version.txt"
	(cd "$1/src" && go_env_clean "$GO" build -trimpath -buildvcs=false -o "$out.new" ./cmd/ferretdb) \
		>>"$GO_LOG" 2>&1 || return 1
	mv "$out.new" "$out"
}

ferretdb_step() {
	local bin=$TOOLS_DIR/bin/ferretdb
	if ferretdb_version_ok "$bin"; then FERRETDB=$bin; return 0; fi
	copy_if_pinned ferretdb ferretdb_version_ok && { FERRETDB=$bin; return 0; }
	[[ -n ${GO:-} ]] || die "FerretDB $FERRETDB_VERSION is missing and there is no Go >= 1.21 to build it
    (Debian 12's golang-go is 1.19, too old). Install Go from https://go.dev/dl into /usr/local/go and rerun.
    FerretDB has no Debian package, so there is no fallback."
	say "building FerretDB $FERRETDB_VERSION with $GO_VERSION from the Go module proxy (about a minute)"
	if ! ferretdb_build || ! ferretdb_version_ok "$bin"; then
		tail -n 15 "$GO_LOG" | sed 's/^/    /' >&2
		die "could not build FerretDB $FERRETDB_VERSION (full log: ${GO_LOG#"$REPO_ROOT"/}); FerretDB has no fallback"
	fi
	changed=1
	FERRETDB=$bin
}

# The NATS CLI, built like nats-server: `go install` of the pinned module from the module proxy.
# Debian 12 has no package of it, so there is no fallback. Every start of it makes its folders
# under XDG_DATA_HOME (~/.local/share): the check points them into .tools, so that bootstrap
# leaves the home folder alone.
natscli_version() { XDG_DATA_HOME=$TOOLS_DIR/natscli XDG_CONFIG_HOME=$TOOLS_DIR/natscli "$1" --version 2>&1; }
natscli_version_ok() { [[ -x $1 && $(natscli_version "$1") == "$NATSCLI_VERSION" ]]; }

natscli_step() {
	local bin=$TOOLS_DIR/bin/nats
	natscli_version_ok "$bin" && return 0
	copy_if_pinned nats natscli_version_ok && return 0
	[[ -n ${GO:-} ]] || die "the NATS CLI (nats) $NATSCLI_VERSION is missing and there is no Go >= 1.21 to build it:
    install Go from https://go.dev/dl into /usr/local/go and rerun"
	say "building the NATS CLI (nats) $NATSCLI_VERSION with $GO_VERSION (go install, from the Go module proxy)"
	if ! (cd "$TOOLS_DIR" && go_env_clean GOBIN="$TOOLS_DIR/bin" "$GO" install "$NATSCLI_MODULE@$NATSCLI_VERSION") \
		>>"$GO_LOG" 2>&1 || ! natscli_version_ok "$bin"; then
		tail -n 15 "$GO_LOG" | sed 's/^/    /' >&2
		die "could not build the NATS CLI $NATSCLI_VERSION (full log: ${GO_LOG#"$REPO_ROOT"/})"
	fi
	changed=1
}

# --- mongosh ----------------------------------------------------------------------------------

# mongosh is an npm package: `npm install --global --prefix .tools` puts it in
# .tools/lib/node_modules/mongosh and its link in .tools/bin/mongosh. The check reads the
# installed package's version instead of running `mongosh --version`, which takes node a second
# to load the shell: a second bootstrap stays fast.
mongosh_version_ok() {
	local pkg=$TOOLS_DIR/lib/node_modules/mongosh/package.json
	[[ -x $TOOLS_DIR/bin/mongosh && -f $pkg ]] && command -v node >/dev/null 2>&1 &&
		grep -Eq "^[[:space:]]*\"version\"[[:space:]]*:[[:space:]]*\"$MONGOSH_VERSION\"" "$pkg"
}

# node and npm, judged by the commands: a Node.js from elsewhere (NodeSource's package, which
# bundles npm and conflicts with Debian's npm package) is used as it is. What is missing comes
# from Debian's nodejs and npm.
node_step() {
	local missing=()
	command -v node >/dev/null 2>&1 || missing+=(nodejs)
	command -v npm >/dev/null 2>&1 || missing+=(npm)
	((${#missing[@]} > 0)) || return 0
	command -v dpkg-query >/dev/null 2>&1 ||
		die "node or npm is missing, and this is not a Debian system: install Node.js with npm and rerun"
	apt_install "${missing[@]}"
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		die "node or npm is still missing after installing ${missing[*]}"
	fi
}

mongosh_step() {
	mongosh_version_ok && return 0
	node_step
	say "installing mongosh $MONGOSH_VERSION with npm $(npm --version 2>/dev/null) (from the npm registry, into ${TOOLS_DIR#"$REPO_ROOT"/}/lib/node_modules)"
	: >"$NPM_LOG"
	if ! npm install --global --prefix "$TOOLS_DIR" --no-audit --no-fund "mongosh@$MONGOSH_VERSION" \
		>>"$NPM_LOG" 2>&1 || ! mongosh_version_ok; then
		tail -n 15 "$NPM_LOG" | sed 's/^/    /' >&2
		die "could not install mongosh $MONGOSH_VERSION with npm (full log: ${NPM_LOG#"$REPO_ROOT"/})"
	fi
	changed=1
}

# --- Python venv for the tests ----------------------------------------------------------------

venv_stamp() {
	printf '%s %s\n' "$(sha256sum <"$REQUIREMENTS" | cut -d' ' -f1)" "$(readlink -f "$PY")"
}

venv_step() {
	[[ -f $REQUIREMENTS ]] || die "${REQUIREMENTS#"$REPO_ROOT"/} is missing"
	local stamp_file=$VENV/.bootstrap-stamp want
	want=$(venv_stamp)
	if [[ -x $VENV/bin/python && -f $stamp_file && $(<"$stamp_file") == "$want" ]]; then
		# The stamp says complete; a venv whose interpreter no longer runs (its Python was
		# removed or upgraded) is made again rather than trusted.
		"$VENV/bin/python" -c '' 2>/dev/null && return 0
		warn "the test venv in .venv does not run any more: making it again"
		rm -f "$stamp_file"
	fi
	if [[ ! -x $VENV/bin/python || ! -f $stamp_file || $(cut -d' ' -f2 "$stamp_file") != "$(readlink -f "$PY")" ]]; then
		say "creating the test venv in .venv with $PY"
		"$PY" -m venv --clear "$VENV" ||
			die "could not create a venv with $PY (on Debian: apt-get install python3-venv)"
	fi
	say "installing test/requirements.txt into .venv"
	local log=$VENV/pip.log
	if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" >"$log" 2>&1; then
		tail -n 15 "$log" | sed 's/^/    /' >&2
		die "pip could not install test/requirements.txt (full log: .venv/pip.log)"
	fi
	printf '%s\n' "$want" >"$stamp_file"
	changed=1
}

# --- .tools/env.sh ----------------------------------------------------------------------------

env_step() {
	PG_BIN=$(pg_bin_search) || die "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: apt-get install postgresql"
	local content
	content=$(
		echo "# Written by deploy/bootstrap.sh; sourced by deploy/*.sh, read by test/integration/harness.py."
		printf 'export PG_BIN=%q\n' "$PG_BIN"
		printf 'export NATS_SERVER=%q\n' "$NATS_SERVER"
		printf 'export FERRETDB=%q\n' "$FERRETDB"
		[[ -n ${GO:-} ]] && printf 'export GO=%q\n' "$GO"
		# shellcheck disable=SC2016 # $PATH is written as it is, for env.sh to expand when sourced
		printf 'case ":$PATH:" in *:%q:*) ;; *) export PATH=%q:%q:"$PATH" ;; esac\n' \
			"$TOOLS_DIR/bin" "$TOOLS_DIR/bin" "$PG_BIN"
	)
	if [[ ! -f $TOOLS_DIR/env.sh || $(<"$TOOLS_DIR/env.sh") != "$content" ]]; then
		printf '%s\n' "$content" >"$TOOLS_DIR/env.sh.new" && mv "$TOOLS_DIR/env.sh.new" "$TOOLS_DIR/env.sh"
		changed=1
	fi
}

summary() {
	local rel=${REPO_ROOT}/
	say "postgresql $("$PG_BIN/postgres" --version | awk '{print $3}') in $PG_BIN"
	say "nats-server $("$NATS_SERVER" --version 2>/dev/null | awk '{print $NF}') at ${NATS_SERVER#"$rel"}"
	say "ferretdb $("$FERRETDB" --version 2>/dev/null | awk '/^version:/ {print $2}') at ${FERRETDB#"$rel"}"
	say "nats (the NATS CLI) $(natscli_version "$TOOLS_DIR/bin/nats") and mongosh $MONGOSH_VERSION" \
		"(node $(node --version 2>/dev/null)) in ${TOOLS_DIR#"$rel"}/bin"
	say "python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())') in .venv:" \
		"$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null |
			grep -iE '^(pytest|requests|psycopg|pymongo|nats-py)==' | tr '\n' ' ')"
	say "gcc $(gcc -dumpfullversion 2>/dev/null || echo missing), ${GO_VERSION:-no go}"
}

main() {
	mkdir -p "$TOOLS_DIR/bin"
	# Two bootstraps at once (make run in one terminal, make test in another) must not build
	# into the same files.
	exec 9>"$TOOLS_DIR/.lock"
	flock -w 900 9 || die "another bootstrap holds ${TOOLS_DIR#"$REPO_ROOT"/}/.lock"

	packages_step
	GO_WANTED=${GO:-}
	GO='' GO_VERSION=''
	local need_go=1
	nats_version_ok "$TOOLS_DIR/bin/nats-server" && ferretdb_version_ok "$TOOLS_DIR/bin/ferretdb" &&
		natscli_version_ok "$TOOLS_DIR/bin/nats" && need_go=0
	if ((need_go)) && ! go_find; then
		[[ -z $GO_WANTED ]] || die "GO=$GO_WANTED is not a Go >= 1.21: unset GO, or point it at a newer one"
		go_toolchain_fetch
	fi
	nats_step
	ferretdb_step
	natscli_step
	mongosh_step
	# Keep GO in env.sh even on the fast path, for whoever wants it; finding it is cheap.
	[[ -n $GO ]] || go_find 2>/dev/null || true
	venv_step
	env_step

	if ((changed)); then
		summary
	else
		say "all present"
	fi
	local n
	for n in "${notes[@]}"; do warn "$n"; done
}

# Sourced by test/integration/test_bootstrap.py to run one step against stubbed system tools.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
