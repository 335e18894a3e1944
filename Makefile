# The test command is `make test` (scripts/test.sh): it installs and starts the
# SQS and DynamoDB emulators, runs every test with -race, runs each fuzz target
# briefly, and stops the emulators.
GO       ?= go
FUZZTIME ?= 5s

.PHONY: test fuzz-long bench chaos

test:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/test.sh

# Longer fuzzing.
fuzz-long:
	$(GO) test -run '^$$' -fuzz '^FuzzParseBlueprint$$' -fuzztime 5m .
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJob$$' -fuzztime 5m .
	$(GO) test -run '^$$' -fuzz '^FuzzCompileEval$$' -fuzztime 5m ./internal/expr

# Per-node overhead on the in-memory implementations (BENCHMARKS.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 .

# A long chaos session (internal/chaos) against freshly started emulators:
# 400 runs on 3 worker processes, a worker SIGKILLed every 2-5 s, 6% of
# requests faulted, 5% of jobs duplicated; prints one summary line.
# CHAOSFLAGS adds flags, e.g. CHAOSFLAGS='-seed 124724982 -runs 1000'.
CHAOSFLAGS ?=
chaos:
	@state=$$(scripts/emulators.sh start) && \
	trap 'SQSADAPTER_EMULATOR_STATE="'"$$state"'" scripts/emulators.sh stop' EXIT && \
	. "$$state/env" && $(GO) run ./internal/chaos/cmd/chaos $(CHAOSFLAGS)
