#!/usr/bin/env bash
# Runs the C unit tests, the fuzz targets for a few seconds each and the integration suite, and
# ends with one line "summary: N passed, N failed, N skipped". Exits non-zero on any failure.
#   test/run.sh [all|unit|fuzz|integration] [pytest arguments...]
#
# Binaries come from $BIN_DIR (default bin). The tests that scan logs for sanitizer reports (the
# user-api tests, test_consumer_san.py) take the sanitizer build from $SAN_BIN_DIR (default bin-san,
# or $BIN_DIR when it is a sanitizer build), and the unit binaries run from both, so `make test`
# needs bin/ and bin-san/. Each unit binary counts as one test: it passes when it printed its result
# line with no failed check and exited 0 (a LeakSanitizer report at exit makes it exit non-zero).
# Each fuzz target of bin-fuzz/ (make fuzz-build) counts as one test too.
# Every skipped test is listed with its reason; one that test/allowed-skips.txt does not allow
# counts as failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
what=${1:-all}
shift || true
export BIN_DIR=${BIN_DIR:-bin}
export SAN_BIN_DIR=${SAN_BIN_DIR:-}
if [ -z "$SAN_BIN_DIR" ]; then
	# The same choice as harness.san_bin_dir(): the ASan runtime's symbol marks a sanitizer build.
	if [ -f "$BIN_DIR/user-api" ] && grep -q __asan_init "$BIN_DIR/user-api"; then
		SAN_BIN_DIR=$BIN_DIR
	else
		SAN_BIN_DIR=bin-san
	fi
fi
allowed=test/allowed-skips.txt
passed=0
failed=0
skipped=0

run_unit_dir() {
	local dir=$1 build=$2 t out rc line checks bad n=0
	for t in "$dir"/unit/test_*; do
		[ -x "$t" ] || continue
		n=$((n + 1))
		out=$("$t" 2>&1)
		rc=$?
		line=$(printf '%s\n' "$out" | grep -E '^unit .*: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
		checks=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/' <<<"$line")
		bad=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/' <<<"$line")
		if [ -n "$line" ] && [ "$bad" -eq 0 ] && [ "$rc" -eq 0 ]; then
			printf 'PASS %s (%s checks)\n' "$t" "$checks"
			passed=$((passed + 1))
			continue
		fi
		printf '%s\n' "$out"
		if [ -z "$line" ]; then
			printf 'FAIL %s: exit status %s, no result line (a crash, or a sanitizer report at exit)\n' "$t" "$rc"
		elif [ "$bad" -ne 0 ]; then
			printf 'FAIL %s: %s of %s checks failed, exit status %s\n' "$t" "$bad" "$((checks + bad))" "$rc"
		else
			printf 'FAIL %s: exit status %s after its result line (a sanitizer report at exit?)\n' "$t" "$rc"
		fi
		failed=$((failed + 1))
	done
	if [ "$n" -eq 0 ]; then
		echo "FAIL $dir/unit: no unit test binaries ($build)"
		failed=$((failed + 1))
	fi
}

run_unit() {
	run_unit_dir "$BIN_DIR" make
	[ "$SAN_BIN_DIR" = "$BIN_DIR" ] || run_unit_dir "$SAN_BIN_DIR" "make san"
}

# Each libFuzzer target of bin-fuzz/ is one test: it passes when it ran FUZZ_SECONDS (default 5)
# on its corpus without a crash, a sanitizer report or a failed property (test/fuzz/run.sh).
run_fuzz() {
	local out line
	out=$(bash test/fuzz/run.sh -s "${FUZZ_SECONDS:-5}")
	printf '%s\n' "$out" | sed '$d'
	line=$(printf '%s\n' "$out" | tail -n 1)
	if [[ $line =~ ^fuzz:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
		passed=$((passed + BASH_REMATCH[1]))
		failed=$((failed + BASH_REMATCH[2]))
	else
		printf '%s\n' "$out"
		echo "FAIL test/fuzz/run.sh: no result line"
		failed=$((failed + 1))
	fi
}

run_integration() {
	local py=.venv/bin/python results=.run/test-results.xml counts rc a paths=()
	mkdir -p .run
	rm -f "$results"
	if [ ! -x "$py" ]; then
		echo "test: .venv is missing: run 'bash deploy/bootstrap.sh' (make test does)" >&2
		failed=$((failed + 1))
		return
	fi
	# The whole suite unless the arguments name tests (a file, a folder or a test id).
	for a in "$@"; do
		[[ $a != -* && -e ${a%%::*} ]] && paths+=("$a")
	done
	[ ${#paths[@]} -gt 0 ] || set -- test/integration "$@"
	"$py" -m pytest -p no:cacheprovider --rootdir=. -rfE -o junit_family=xunit1 --junitxml="$results" "$@"
	rc=$?
	if [ ! -f "$results" ]; then
		echo "test: pytest ended with status $rc and wrote no results" >&2
		failed=$((failed + 1))
		return
	fi
	# One line "passed failed skipped" last; before it one line per skipped test.
	if ! counts=$("$py" - "$results" "$allowed" <<'PY'
import fnmatch, sys, xml.etree.ElementTree as ET

results, allowed_file = sys.argv[1], sys.argv[2]
allowed = []
try:
    with open(allowed_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pattern, why = (line.split(None, 1) + [""])[:2]
                allowed.append((pattern, why.strip()))
except FileNotFoundError:
    pass

# A test's outcome: failed if any of its records failed or errored (a failure and a teardown
# error are two records of one test), else skipped (with the reason) if skipped, else passed.
outcome = {}
for case in ET.parse(results).getroot().iter("testcase"):
    # xunit1 names the file; the class path follows the module's dotted name.
    path = case.get("file", "")
    module = path[:-3].replace("/", ".") if path.endswith(".py") else ""
    cls = case.get("classname", "")
    inner = cls[len(module) + 1:] if module and cls.startswith(module + ".") else ""
    test_id = "::".join(p for p in (path or cls, inner, case.get("name", "")) if p)
    skip = case.find("skipped")
    if case.find("failure") is not None or case.find("error") is not None:
        outcome[test_id] = ("failed", None)
    elif skip is not None and outcome.get(test_id, ("",))[0] != "failed":
        outcome[test_id] = ("skipped", " ".join(
            (skip.get("message") or skip.text or "no reason given").split()))
    else:
        outcome.setdefault(test_id, ("passed", None))

passed = failed = skipped = 0
for test_id, (state, reason) in outcome.items():
    if state == "passed":
        passed += 1
    elif state == "failed":
        failed += 1
    else:
        why = next((w for p, w in allowed if p == test_id or fnmatch.fnmatchcase(test_id, p)), None)
        if why is None:
            failed += 1
            print(f"SKIP NOT ALLOWED {test_id}: {reason} (not in {allowed_file})")
        else:
            skipped += 1
            print(f"SKIP {test_id}: {reason} (allowed: {why})")
print(passed, failed, skipped)
PY
	); then
		echo "test: could not read $results" >&2
		failed=$((failed + 1))
		return
	fi
	printf '%s\n' "$counts" | sed '$d'
	read -r a b c <<<"$(printf '%s\n' "$counts" | tail -n 1)"
	passed=$((passed + a))
	failed=$((failed + b))
	skipped=$((skipped + c))
	if [ "$rc" -ne 0 ] && [ "$b" -eq 0 ]; then
		echo "test: pytest ended with status $rc" >&2
		failed=$((failed + 1))
	fi
}

case $what in
all) run_unit; run_fuzz; run_integration "$@" ;;
unit) run_unit ;;
fuzz) run_fuzz ;;
integration) run_integration "$@" ;;
*) echo "usage: test/run.sh [all|unit|fuzz|integration] [pytest arguments...]" >&2; exit 2 ;;
esac

echo "summary: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
