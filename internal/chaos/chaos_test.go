package chaos

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestChaosBounded runs a bounded chaos session against the emulators: 30
// runs (15 at a time) on 3 worker processes, a worker killed every 3–6 s,
// 5% of the requests faulted, 5% of the received jobs duplicated, the
// waiting nodes resumed by the driver and 10% of the runs cancelled while
// one waits. Every check of Run must pass. SQSADAPTER_SEED replays a seed.
func TestChaosBounded(t *testing.T) {
	sqsEndpoint, ddbEndpoint := os.Getenv("SQSADAPTER_SQS_ENDPOINT"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")
	if sqsEndpoint == "" || ddbEndpoint == "" {
		t.Skip("chaos test: SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT are not set. " +
			"To run it: state=$(scripts/emulators.sh start) && . $state/env && go test ./internal/chaos; " +
			"or run `make test`, which does all of it")
	}
	var seed uint64
	if s := os.Getenv("SQSADAPTER_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "SQSADAPTER_SEED must be an unsigned integer")
		seed = v
	}
	cfg := Config{
		SQSEndpoint: sqsEndpoint, DynamoDBEndpoint: ddbEndpoint,
		Seed: seed,
		Runs: 30, InFlight: 15,
		Workers: 3, Concurrency: 8, VisibilityTimeout: 3 * time.Second,
		KillMin: 3 * time.Second, KillMax: 6 * time.Second,
		FaultRate: 0.05, DuplicateRate: 0.05, CancelRate: 0.1,
		// Every finished run's items must expire (checked with the raw items).
		Retention: 2 * time.Hour,
		// Runs take 20-60 s here; the bound catches a lost run, not a slow machine.
		RunTimeout: 300 * time.Second, DrainTimeout: 45 * time.Second,
		LogLevel: "info",
		Logf:     t.Logf,
	}
	sum, err := Run(t.Context(), cfg)
	require.NoError(t, err)
	t.Log(sum)
	for _, p := range sum.Problems {
		t.Errorf("%s", p)
	}
	if !sum.OK() {
		t.Logf("worker logs: %s", sum.LogDir)
		t.Logf("reproduce: SQSADAPTER_SEED=%d go test -count=1 -run '^TestChaosBounded$' ./internal/chaos", sum.Seed)
	}
	// The chaos happened.
	assert.Positive(t, sum.Kills, "no worker was killed")
	assert.Positive(t, sum.Faults.Faulted(), "no fault was injected")
	assert.Positive(t, sum.Duplicates, "no job was duplicated")
	assert.Positive(t, sum.Completed, "no run completed")
	assert.Positive(t, sum.Resumed, "no waiting node was resumed")
	assert.Positive(t, sum.Sleeps, "no sleep woke")
}
