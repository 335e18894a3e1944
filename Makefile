# The test command is `make test` (scripts/test.sh): it installs and starts the
# SQS and DynamoDB emulators, runs every test with -race, runs each fuzz target
# for a fixed number of executions, and stops the emulators.
GO ?= go

.PHONY: test fuzz-long bench chaos flake-hunt protocol-long differential batch-10k flowcraft-examples

test:
	GO=$(GO) scripts/test.sh

# Longer fuzzing, for a person exploring by hand. It keeps duration budgets,
# which read better at this length; on Go before 1.27 a duration budget can
# end with "context deadline exceeded" and no failing input written (a race in
# the fuzz coordinator, Go issue 75804): that line is not a finding. `make
# test` uses execution counts instead, which do not hit that race.
fuzz-long:
	$(GO) test -run '^$$' -fuzz '^FuzzParseBlueprint$$' -fuzztime 5m .
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJob$$' -fuzztime 5m .
	$(GO) test -run '^$$' -fuzz '^FuzzCompileEval$$' -fuzztime 5m ./internal/expr

# The randomized protocol test at length: every class (faults with spare
# attempts, the defaults, hostile ids and values, life-cycle races, stray
# jobs, purge and reconcile) with PROTOCOL_RUNS runs each, on the in-memory
# parts; prints one summary line (and the failures, if any). The test
# command runs a bounded version of each class. SQSADAPTER_SEED=<seed>
# replays a session's blueprints.
PROTOCOL_RUNS ?= 1000
protocol-long:
	SQSADAPTER_PROTOCOL_LONG=$(PROTOCOL_RUNS) $(GO) test -race -count=1 -timeout 4h -run '^TestProtocolLong$$'

# Per-node overhead on the in-memory implementations (BENCHMARKS.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 .

# A long chaos session (internal/chaos) against freshly started emulators:
# 400 runs on 3 worker processes, a worker SIGKILLed every 2-5 s, 6% of
# requests faulted, 5% of jobs duplicated, waiting nodes resumed (some
# twice, some racing a cancel) and slept; about 7 minutes here; prints one
# summary line.
# CHAOSFLAGS adds flags, e.g. CHAOSFLAGS='-seed 124724982 -runs 1000'.
CHAOSFLAGS ?=
chaos:
	@state=$$(scripts/emulators.sh start) && \
	trap 'SQSADAPTER_EMULATOR_STATE="'"$$state"'" scripts/emulators.sh stop' EXIT && \
	. "$$state/env" && $(GO) run ./internal/chaos/cmd/chaos $(CHAOSFLAGS)

# Runs the test command N times, each from a fresh clone of HEAD, and prints
# "N passed, N failed". BUSY=1 keeps both cores busy with spinning processes
# beside it, as on a loaded CI machine. Logs are kept under the printed folder.
N    ?= 10
BUSY ?= 0
flake-hunt:
	N=$(N) BUSY=$(BUSY) GO=$(GO) scripts/flake-hunt.sh

# The differential test at length: DIFF_RUNS generated blueprints and the
# hand-written ones through Flowcraft's own in-memory runtime and through this
# library, compared after the normalization rules of differential_test.go;
# prints the summary line (and the differences, if any). Flowcraft is
# installed by scripts/emulators.sh. SQSADAPTER_DIFF_SEED=<seed> replays.
DIFF_RUNS ?= 5000
differential:
	@state=$$(scripts/emulators.sh start) && \
	trap 'SQSADAPTER_EMULATOR_STATE="'"$$state"'" scripts/emulators.sh stop' EXIT && \
	. "$$state/env" && out=$$(mktemp) && \
	{ SQSADAPTER_DIFF_RUNS=$(DIFF_RUNS) $(GO) test -race -count=1 -timeout 30m -v -run '^TestDifferentialFlowcraft$$' . >"$$out" 2>&1; rc=$$?; } ; \
	grep -v -e '^=== RUN' -e '^--- ' -e '^PASS$$' -e '^FAIL$$' -e '^ok ' "$$out"; rm -f "$$out"; exit $$rc

# The batch map at 10,000 items on freshly started emulators (the test
# command maps 1,000): wall time, requests per item, largest records. About
# 2-3 minutes here.
batch-10k:
	@state=$$(scripts/emulators.sh start) && \
	trap 'SQSADAPTER_EMULATOR_STATE="'"$$state"'" scripts/emulators.sh stop' EXIT && \
	. "$$state/env" && SQSADAPTER_BATCH_ITEMS=10000 $(GO) test -count=1 -timeout 20m -v -run '^TestIntegrationBatch10000$$' .

# Flowcraft's example blueprints side by side (flowcraft_examples_test.go):
# every blueprint of FLOWCRAFT_EXAMPLES/*/*.json loaded unchanged, each
# parent run once per branch choice through Flowcraft's own runtime and
# through this library with the same stand-in nodes, compared after the
# rules of exampleRules; prints one line per run and a summary. It uses
# the Flowcraft that scripts/emulators.sh installs (SQSADAPTER_FLOWCRAFT if
# set), and starts the emulators only to install it when it is missing.
FLOWCRAFT_EXAMPLES ?=
flowcraft-examples:
	@test -n "$(FLOWCRAFT_EXAMPLES)" || { echo "usage: make flowcraft-examples FLOWCRAFT_EXAMPLES=<folder of */*.json blueprints>" >&2; exit 2; }
	@check() { \
		out=$$(mktemp); \
		{ SQSADAPTER_FLOWCRAFT_EXAMPLES="$(abspath $(FLOWCRAFT_EXAMPLES))" $(GO) test -race -count=1 -timeout 10m -v \
			-run '^TestFlowcraftExamplesSideBySide$$' . >"$$out" 2>&1; rc=$$?; }; \
		grep -v -e '^=== ' -e '^    --- PASS' -e '^PASS$$' -e '^FAIL$$' -e '^ok ' "$$out"; rm -f "$$out"; return $$rc; \
	}; \
	want=$$(sed -n 's/^FLOWCRAFT_VERSION=//p' scripts/emulators.sh); \
	pkg=$${SQSADAPTER_FLOWCRAFT:-$${SQSADAPTER_CACHE:-$$HOME/.cache/sqsadapter}/node_modules/flowcraft}; \
	if [ -f "$$pkg/dist/index.mjs" ] && [ "$$(node -p 'require(process.argv[1]).version' "$$pkg/package.json" 2>/dev/null)" = "$$want" ]; then \
		SQSADAPTER_FLOWCRAFT=$$pkg check; \
	else \
		state=$$(scripts/emulators.sh start) && \
		trap 'SQSADAPTER_EMULATOR_STATE="'"$$state"'" scripts/emulators.sh stop' EXIT && \
		. "$$state/env" && check; \
	fi
