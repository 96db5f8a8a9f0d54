#!/usr/bin/env bash
# Runs the dev stack in the foreground: the infrastructure and the migrations (deploy/infra.sh),
# then user-api, outbox-relay and notification-consumer with labelled logs, each with the settings
# of its .run/<process>.env (written by infra.sh: its own PostgreSQL role and password). Ctrl-C
# stops the services first, then the infrastructure. If one process dies, everything stops, exit 1.
# `make run` calls it after bootstrap and build. BIN_DIR (default bin) picks the binaries.
set -euo pipefail
LOG_TAG=run
# shellcheck source=deploy/infra.sh
. "$(dirname "${BASH_SOURCE[0]}")/infra.sh"

BIN_DIR=${BIN_DIR:-$REPO_ROOT/bin}
SERVICES=(user-api outbox-relay notification-consumer)
declare -A SVC_PORT_VAR=([user-api]=USER_API_PORT [outbox-relay]=OUTBOX_RELAY_PORT
	[notification-consumer]=NOTIFICATION_CONSUMER_PORT)
declare -A SVC_PIDS=()
: "${USER_API_PORT:=8080}" "${NOTIFICATION_CONSUMER_PORT:=8081}" "${OUTBOX_RELAY_PORT:=8082}"
export USER_API_PORT NOTIFICATION_CONSUMER_PORT OUTBOX_RELAY_PORT

# svc_start NAME: bin/NAME with the settings of .run/NAME.env laid over run.sh's environment, read
# as systemd's EnvironmentFile would be (`set -a; .`), in a subshell that becomes the service.
svc_start() {
	local name=$1 fd
	log_rotate "$name"
	exec {fd}> >(log_label "$name")
	# shellcheck source=/dev/null # written by infra.sh at every start
	(set -a && . "$RUN_DIR/$name.env" && set +a && exec setsid "$BIN_DIR/$name") </dev/null >&"$fd" 2>&1 &
	SVC_PIDS[$name]=$!
	exec {fd}>&-
	printf '%s\n' "$!" >"$RUN_DIR/pids/$name.pid"
}

# Waits for each service to answer /healthz; one that does not within 15 s gets a warning but
# keeps running (it retries its dependencies by design). One that dies is the supervisor's.
svc_wait_healthy() {
	local name port deadline=$((SECONDS + 15))
	declare -A pending=()
	for name in "${!SVC_PIDS[@]}"; do pending[$name]=1; done
	while ((${#pending[@]} > 0 && SECONDS < deadline && !INFRA_STOP_REQUESTED)); do
		for name in "${!pending[@]}"; do
			port=${!SVC_PORT_VAR[$name]}
			if ! pid_alive "${SVC_PIDS[$name]}"; then
				unset "pending[$name]"
			elif curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
				unset "pending[$name]"
			fi
		done
		sleep 0.2
	done
	for name in "${!pending[@]}"; do
		warn "$name does not answer http://127.0.0.1:${!SVC_PORT_VAR[$name]}/healthz yet (see its [${name}] lines)"
	done
}

# SIGTERM to all, then up to 10 s for them to finish their work in flight, then SIGKILL.
svc_stop_all() {
	local name pid deadline=$((SECONDS + 10))
	for name in "${!SVC_PIDS[@]}"; do
		say "stopping $name (pid ${SVC_PIDS[$name]})"
		# The whole group: a service started in a session of its own, helpers included.
		kill -TERM -- "-${SVC_PIDS[$name]}" 2>/dev/null || kill -TERM "${SVC_PIDS[$name]}" 2>/dev/null || true
	done
	for name in "${!SVC_PIDS[@]}"; do
		pid=${SVC_PIDS[$name]}
		if ! pid_wait_gone "$pid" $((deadline > SECONDS ? deadline - SECONDS : 0)); then
			warn "$name (pid $pid) did not stop within 10 s of SIGTERM: killing it"
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
		rm -f "$RUN_DIR/pids/$name.pid"
		unset "SVC_PIDS[$name]"
	done
}

# The block that says what is where, once everything has started: the services' addresses, NATS's
# monitoring page, the data, the logs, and how to stop and wipe. It is written at once, so that
# the services' labelled lines cannot cut into it. Paths inside the checkout are shown relative to
# it, as make run is started from there.
where_block() {
	local rel=${RUN_DIR#"$REPO_ROOT"/} name data line block
	declare -A what=([user-api]="/users" [notification-consumer]="/notifications"
		[outbox-relay]="/metrics")
	block="$LOG_TAG: ready:"$'\n'
	for name in "${SERVICES[@]}"; do
		[[ -n ${SVC_PIDS[$name]:-} ]] || continue
		printf -v line '  %-22s http://127.0.0.1:%s%s\n' "$name" "${!SVC_PORT_VAR[$name]}" "${what[$name]}"
		block+=$line
	done
	if ((NATS_LOCAL)); then
		printf -v line '  %-22s http://127.0.0.1:%s\n' "NATS monitoring" "$NATS_MONITOR_PORT"
		block+=$line
	fi
	data="$rel/ (PostgreSQL, the NATS stream, the copy), kept across restarts"
	if ((PG_LOCAL)) && [[ $PGDATA_DIR != "$RUN_DIR/pg" ]]; then
		data+="; PostgreSQL's files in $PGDATA_DIR"
	fi
	printf -v line '  %-22s %s\n' data "$data" logs "$rel/logs/<name>.log (the previous run's in <name>.log.1)" \
		stop "Ctrl-C stops everything; then make clean-data wipes the data"
	printf '%s%s' "$block" "$line"
}

stop_all() {
	svc_stop_all
	infra_stop
}

main() {
	trap 'INFRA_STOP_REQUESTED=1' INT TERM
	trap 'stop_all' EXIT

	local name present=()
	for name in "${SERVICES[@]}"; do
		if [[ -x $BIN_DIR/$name ]]; then
			present+=("$name")
		else
			warn "${BIN_DIR#"$REPO_ROOT"/}/$name is not built: running without it"
		fi
	done
	[[ -x $BIN_DIR/migrate ]] || die "${BIN_DIR#"$REPO_ROOT"/}/migrate is missing: build it with make"
	for name in "${present[@]}"; do
		port_check "${!SVC_PORT_VAR[$name]}" "${SVC_PORT_VAR[$name]}" "$name"
	done

	# The infrastructure, the migrations and .run/<process>.env.
	if ! infra_start fg; then
		((INFRA_STOP_REQUESTED)) && exit 0
		die "could not start the infrastructure"
	fi

	for name in "${present[@]}"; do svc_start "$name"; done
	((${#present[@]} == 0)) && warn "no service binary is built: running the infrastructure only"
	svc_wait_healthy
	if [[ -n ${API_TOKENS_FILE:-} ]]; then
		say "the APIs ask for a bearer token from $API_TOKENS_FILE: curl -H 'Authorization: Bearer <token>' ..."
	else
		say "no API_TOKENS_FILE: the APIs answer anyone without a token, on 127.0.0.1 only"
	fi
	where_block

	local dead status
	while ((!INFRA_STOP_REQUESTED)); do
		dead=
		status=0
		if ((${#SVC_PIDS[@]} + ${#INFRA_PIDS[@]} == 0)); then
			sleep 1 & # nothing of ours runs (all external, nothing built): wait for Ctrl-C
			wait $! || true
			continue
		fi
		wait -n -p dead "${SVC_PIDS[@]}" "${INFRA_PIDS[@]}" || status=$?
		((INFRA_STOP_REQUESTED)) && break
		[[ -n $dead ]] || continue
		local who=
		for name in "${!SVC_PIDS[@]}"; do
			[[ ${SVC_PIDS[$name]} == "$dead" ]] && { who=$name; unset "SVC_PIDS[$name]"; }
		done
		for name in "${!INFRA_PIDS[@]}"; do
			[[ ${INFRA_PIDS[$name]} == "$dead" ]] && { who=$name; unset "INFRA_PIDS[$name]"; }
		done
		[[ -n $who ]] || continue
		rm -f "$RUN_DIR/pids/$who.pid"
		printf '\n%s: ERROR: %s (pid %s) exited unexpectedly with status %s; stopping everything\n\n' \
			"$LOG_TAG" "$who" "$dead" "$status" >&2
		[[ -f $RUN_DIR/logs/$who.log ]] && log_tail "$who"
		exit 1
	done
	say "stopping"
	stop_all
	trap - EXIT
	say "stopped"
	exit 0
}

main "$@"
