#!/usr/bin/env bash
# Runs the libFuzzer targets of test/fuzz/ (built into bin-fuzz/ by `make fuzz-build`), one after
# another, each for SECONDS on its corpus, and prints one line per target, PASS or FAIL, then
# "fuzz: N passed, N failed". Exits non-zero when any failed. `make fuzz` and test/run.sh call it.
#   test/fuzz/run.sh [-s SECONDS] [target...]      (default 60 seconds, every target)
#
# A target fails on a crash, a sanitizer report, a leak, a timeout or a property it checks (see
# test/fuzz/fuzz.h). Its seeds (test/fuzz/corpus/<target>/) are only read: what libFuzzer finds
# goes to build-fuzz/corpus/<target>/, which later runs start from too, and a failing input to
# build-fuzz/artifacts/<target>/, printed in the output so a CI log is enough to reproduce it.
#
# test/fuzz/xfail.txt lists properties known to fail until a fix lands ("target property why").
# Each listed property is first checked alone on the target's seeds, where it must fail (a pass
# means the fix landed: its line must go, and until then the target fails); then the target is
# fuzzed with the listed properties not enforced (FUZZ_XFAIL), and that must pass.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
seconds=60
if [[ ${1:-} == -s ]]; then
	seconds=$2
	shift 2
fi
bin_dir=${FUZZ_BIN_DIR:-bin-fuzz}
out=build-fuzz
xfail_file=test/fuzz/xfail.txt
passed=0
failed=0

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for src in test/fuzz/fuzz_*.c; do
		t=${src##*/}
		targets+=("${t%.c}")
	done
fi

# The properties xfail.txt lists for target $1, separated by commas.
xfail_props() {
	[ -f "$xfail_file" ] || return 0
	awk -v t="$1" '!/^#/ && $1 == t { printf "%s%s", sep, $2; sep = "," }' "$xfail_file"
}

# The comma-separated list $1 without $2.
others() {
	local p out=
	for p in ${1//,/ }; do
		[ "$p" = "$2" ] || out+=${out:+,}$p
	done
	printf '%s' "$out"
}

# Prints what a failed run left: the end of its log and each input it saved, escaped and in base64.
show_failure() {
	local log=$1 dir=$2 f
	tail -n 40 "$log" | sed 's/^/    /'
	for f in "$dir"/*; do
		[ -f "$f" ] || continue
		printf '    input %s (%s bytes), base64: %s\n' "$f" "$(stat -c %s "$f")" \
			"$(head -c 4096 "$f" | base64 -w 0)"
	done
}

# The sanitizer reports of a log, if any.
sanitizer_report() {
	grep -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|ERROR: libFuzzer: (timeout|out-of-memory)' "$1"
}

run_target() {
	local t=$1 bin=$bin_dir/$1 seeds=test/fuzz/corpus/$1 work=$out/corpus/$1 art=$out/artifacts/$1
	local log=$out/logs/$1.log props dict=() runs p rc
	if [ ! -x "$bin" ]; then
		echo "FAIL $bin: not built (make fuzz-build; it needs clang and libclang-rt-14-dev, which bash deploy/bootstrap.sh installs)"
		return 1
	fi
	if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
		echo "FAIL $bin: no seed corpus in $seeds"
		return 1
	fi
	mkdir -p "$work" "$art" "$out/logs"
	rm -f "$art"/*
	[ -f "test/fuzz/$t.dict" ] && dict=(-dict="test/fuzz/$t.dict")
	props=$(xfail_props "$t")
	# Each listed property on its own, on the seeds alone: it must still fail.
	for p in ${props//,/ }; do
		FUZZ_XFAIL=$(others "$props" "$p") "$bin" -runs=0 -timeout=10 -artifact_prefix="$art/" \
			"${dict[@]}" "$seeds" >"$log" 2>&1
		rc=$?
		if [ "$rc" -eq 0 ]; then
			echo "FAIL $bin: property $p passed on its seeds, though $xfail_file says it fails: the fix is in, remove its line"
			return 1
		fi
		if sanitizer_report "$log" >/dev/null ||
			! grep -q "^fuzz property \"$p\" failed" "$log"; then
			echo "FAIL $bin: on its seeds, expected property $p to fail ($xfail_file), but:"
			show_failure "$log" "$art"
			return 1
		fi
		rm -f "$art"/*
	done
	FUZZ_XFAIL=$props "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$art/" "${dict[@]}" "$work" "$seeds" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
	if [ "$rc" -ne 0 ] || [ -z "$runs" ] || sanitizer_report "$log" >/dev/null; then
		echo "FAIL $bin: exit status $rc after ${seconds}s on $seeds (log: $log)"
		show_failure "$log" "$art"
		return 1
	fi
	if [ -n "$props" ]; then
		echo "PASS $bin ($runs runs in ${seconds}s; ${props//,/, } still failing on its seeds, as $xfail_file expects)"
	else
		echo "PASS $bin ($runs runs in ${seconds}s)"
	fi
}

for t in "${targets[@]}"; do
	if run_target "$t"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
