#!/usr/bin/env bash
# Runs the test command (.ci/run, which calls `make test`) N times in a row,
# each time from a fresh clone of HEAD in a new temporary folder, and prints
# one line per run and then "N passed, N failed". Only committed work is
# tested: commit first.
#
# Environment:
#   N      how many runs (default 10)
#   BUSY   1: keep every core busy with spinning processes during the runs, as
#          on a loaded CI machine (default 0)
#   KEEP   1: keep the clones, not only the logs (default 0)
#
# Logs go to a new folder under ${TMPDIR:-/tmp}, printed at the start; a failed
# run's failing tests are printed after its line. Exits 1 if any run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
N="${N:-10}"
BUSY="${BUSY:-0}"
KEEP="${KEEP:-0}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "flake-hunt: N must be a positive whole number" >&2; exit 2; }

out=$(mktemp -d "${TMPDIR:-/tmp}/sqsadapter-flake-hunt.XXXXXX")
echo "flake-hunt: $N runs of $(git rev-parse --short HEAD), busy=$BUSY, logs in $out"

hogs=()
stop_hogs() {
	local pid
	for pid in "${hogs[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	hogs=()
}
trap stop_hogs EXIT
if [[ "$BUSY" == 1 ]]; then
	for ((c = 0; c < $(nproc); c++)); do
		(while :; do :; done) &
		hogs+=("$!")
	done
fi

passed=0 failed=0
for ((i = 1; i <= N; i++)); do
	dir=$(mktemp -d "${TMPDIR:-/tmp}/sqsadapter-flake-clone.XXXXXX")
	git clone -q "$repo" "$dir/src"
	log="$out/run-$i.log"
	start=$SECONDS
	if (cd "$dir/src" && CI=true bash .ci/run) >"$log" 2>&1 </dev/null; then
		passed=$((passed + 1))
		echo "run $i: pass in $((SECONDS - start))s"
	else
		failed=$((failed + 1))
		echo "run $i: FAIL in $((SECONDS - start))s (log: $log)"
		grep -E '^(--- FAIL|FAIL|panic:|gofmt needed|emulators: error)' "$log" | head -n 20 | sed 's/^/    /' || true
	fi
	[[ "$KEEP" == 1 ]] || rm -rf "$dir"
done
stop_hogs
echo "$passed passed, $failed failed"
((failed == 0))
