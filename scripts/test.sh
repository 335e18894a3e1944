#!/usr/bin/env bash
# The test command (make test): installs and starts the SQS and DynamoDB
# emulators, runs gofmt, go vet, every test with -race (integration tests
# included) and each fuzz target briefly, then stops the emulators it started.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-5s}"

unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
	echo "gofmt needed:" >&2
	echo "$unformatted" >&2
	exit 1
fi
"$GO" vet ./...

state=$(scripts/emulators.sh start)
export SQSADAPTER_EMULATOR_STATE="$state"
trap 'scripts/emulators.sh stop || true' EXIT
# shellcheck disable=SC1091
. "$state/env"

"$GO" test -race -count=1 -timeout 30m ./...

"$GO" test -run '^$' -fuzz '^FuzzParseBlueprint$' -fuzztime "$FUZZTIME" .
"$GO" test -run '^$' -fuzz '^FuzzDecodeJob$' -fuzztime "$FUZZTIME" .
"$GO" test -run '^$' -fuzz '^FuzzCompileEval$' -fuzztime "$FUZZTIME" ./internal/expr
