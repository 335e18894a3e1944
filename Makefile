# The test command is `make test` (scripts/test.sh): it installs and starts the
# SQS and DynamoDB emulators, runs every test with -race, runs each fuzz target
# briefly, and stops the emulators.
GO       ?= go
FUZZTIME ?= 5s

.PHONY: test fuzz-long bench emulators-start

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
