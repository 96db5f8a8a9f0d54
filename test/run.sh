#!/usr/bin/env bash
# Runs the C unit tests and the integration suite against the binaries in $BIN_DIR (default bin),
# and ends with one line "summary: N passed, N failed". Exits non-zero on any failure.
#   test/run.sh [all|unit|integration] [pytest arguments...]
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
shift || true
export BIN_DIR=${BIN_DIR:-bin}
passed=0
failed=0

run_unit() {
	local t out line p f
	for t in "$BIN_DIR"/unit/test_*; do
		[ -x "$t" ] || continue
		out=$("$t" 2>&1)
		line=$(printf '%s\n' "$out" | grep -E '^unit .*: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
		if [ -z "$line" ]; then
			printf '%s\n%s: crashed or printed no result\n' "$out" "$t"
			failed=$((failed + 1))
			continue
		fi
		p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/' <<<"$line")
		f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/' <<<"$line")
		passed=$((passed + p))
		failed=$((failed + f))
		if [ "$f" -ne 0 ]; then printf '%s\n' "$out"; else printf '%s\n' "$line"; fi
	done
}

run_integration() {
	local py=.venv/bin/python results=.run/test-results.xml counts rc
	mkdir -p .run
	rm -f "$results"
	if [ ! -x "$py" ]; then
		echo "test: .venv is missing: run 'bash deploy/bootstrap.sh' (make test does)" >&2
		failed=$((failed + 1))
		return
	fi
	"$py" -m pytest test/integration -p no:cacheprovider -rfE --junitxml="$results" "$@"
	rc=$?
	if [ ! -f "$results" ]; then
		echo "test: pytest ended with status $rc and wrote no results" >&2
		failed=$((failed + 1))
		return
	fi
	counts=$("$py" - "$results" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skip = sum(int(s.get("skipped", 0)) for s in suites)
print(t - bad - skip, bad)
PY
)
	passed=$((passed + ${counts% *}))
	failed=$((failed + ${counts#* }))
	if [ "$rc" -ne 0 ] && [ "${counts#* }" -eq 0 ]; then
		echo "test: pytest ended with status $rc" >&2
		failed=$((failed + 1))
	fi
}

case $what in
all) run_unit; run_integration "$@" ;;
unit) run_unit ;;
integration) run_integration "$@" ;;
*) echo "usage: test/run.sh [all|unit|integration] [pytest arguments...]" >&2; exit 2 ;;
esac

echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
