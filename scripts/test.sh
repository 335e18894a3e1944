#!/usr/bin/env bash
# The test command (make test): installs and starts the SQS and DynamoDB
# emulators, runs gofmt, go vet, every test with -race (integration tests
# included) and each fuzz target for a fixed number of executions, then stops
# the emulators it started.
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
# Fuzz budgets are execution counts (a few seconds each here), never
# durations: on Go before 1.27 a duration budget that expires while a worker is
# mid-execution fails with "context deadline exceeded" and no input (Go issue
# 75804), which would fail this command by chance.
FUZZ_EXECS="${FUZZ_EXECS:-15000}"

# -race needs cgo, hence a C compiler.
if ! command -v "${CC:-gcc}" >/dev/null && ! command -v cc >/dev/null; then
	echo "a C compiler is required for go test -race (apt-get install gcc, dnf install gcc, or xcode-select --install)" >&2
	exit 1
fi

unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
	echo "gofmt needed:" >&2
	echo "$unformatted" >&2
	exit 1
fi
"$GO" vet ./...
# The root package's public API stays small enough to hold in one's head.
"$GO" run ./internal/cmd/apicount -max 70 .
# The deployment files: deploy_test.go parses them and checks the worker
# policy; cfn-lint and terraform (fmt only: validate would fetch the
# provider) check them further where installed; neither is required.
if command -v cfn-lint >/dev/null; then
	cfn-lint deploy/cloudformation.yaml examples/lambda/template.yaml
fi
if command -v terraform >/dev/null; then
	CHECKPOINT_DISABLE=1 terraform fmt -check -recursive deploy/terraform
fi

state=$(scripts/emulators.sh start)
export SQSADAPTER_EMULATOR_STATE="$state"
trap 'scripts/emulators.sh stop || true' EXIT
# shellcheck disable=SC1091
. "$state/env"

"$GO" test -race -count=1 -timeout 30m ./...

"$GO" test -run '^$' -fuzz '^FuzzParseBlueprint$' -fuzztime "${FUZZ_EXECS}x" .
"$GO" test -run '^$' -fuzz '^FuzzDecodeJob$' -fuzztime "${FUZZ_EXECS}x" .
"$GO" test -run '^$' -fuzz '^FuzzCompileEval$' -fuzztime "${FUZZ_EXECS}x" ./internal/expr
