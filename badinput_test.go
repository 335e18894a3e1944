package sqsadapter_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/store"
)

// badInputVisibility is short, so that messages left for the dead-letter
// queue get there quickly, yet long enough that a node's heartbeat (every
// third of it) keeps its lease on a loaded machine under -race: at 5 units
// (100 ms) a late heartbeat let a redelivery take an expired lease and
// count a second attempt, failing a run that should complete.
const badInputVisibility = 25 * unit

// TestBadInput gives each kind of bad input its defined outcome (docs/semantics.md's
// "Bad input" table): the worker never crashes, no run is left running, and
// nothing is lost — an input that names no run ends in the dead-letter
// queue, one that names a run fails it with the reason.
func TestBadInput(t *testing.T) {
	t.Parallel()
	const bpJSON = `{"id":"bad","metadata":{"version":"1"},"nodes":[{"id":"a","uses":"a"},{"id":"b","uses":"b"}],
	  "edges":[{"source":"a","target":"b","condition":"result.output.n > 1"}]}`
	ok := func(out any) sqsadapter.NodeFunc {
		return func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: out}, nil
		}
	}
	type outcome int
	const (
		deadLettered outcome = iota // the message ends in the DLQ; the worker goes on
		runFails                    // the run is marked failed with a reason
		runCompletes                // handled; the run completes
		edgeNotTaken                // the run completes without b; an expression error is counted
	)
	cases := []struct {
		name   string
		a, b   sqsadapter.NodeFunc
		body   func(runID string) string // a raw message to send instead of starting a run normally
		cfgA   string                    // node a's config JSON
		cond   string                    // the edge's condition, if not the default
		want   outcome
		reason string // in the run's error
		wantB  int64  // b's output when the run completes: the number of keys of its input
	}{
		{name: "malformed JSON body", body: func(string) string { return `{"runId": ` }, want: deadLettered},
		{name: "missing fields", body: func(string) string { return `{"runId":"r1","nodeId":"a"}` }, want: deadLettered},
		{name: "extra fields are ignored", body: func(id string) string {
			return `{"runId":"` + id + `","blueprintId":"bad","nodeId":"a","blueprintVersion":"1","input":null,"isLastAttempt":true,"attempt":3,"extra":{"x":1}}`
		}, a: ok(map[string]any{"n": 2}), want: runCompletes, wantB: 1},
		{name: "unknown blueprint", body: func(id string) string {
			return `{"runId":"` + id + `","blueprintId":"nope","nodeId":"a","blueprintVersion":"1"}`
		}, want: deadLettered},
		{name: "blueprint version this worker lacks", body: func(id string) string {
			return `{"runId":"` + id + `","blueprintId":"bad","nodeId":"a","blueprintVersion":"2"}`
		}, want: deadLettered},
		{name: "unknown node", body: func(id string) string {
			return `{"runId":"` + id + `","blueprintId":"bad","nodeId":"zz","blueprintVersion":"1"}`
		}, want: runFails, reason: "unknown node"},
		{name: "output over the item limit", a: ok(map[string]any{"n": 2, "big": strings.Repeat("x", 500<<10)}), want: runFails, reason: "exceeds"},
		{name: "node panics", a: func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) { panic("boom") },
			want: runFails, reason: "panicked: boom"},
		{name: "node ignores its ctx past its timeout", cfgA: `{"timeout":30,"maxRetries":2}`,
			a: func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				if nc.Attempt == 1 {
					time.Sleep(300 * time.Millisecond) // ignores ctx
					return sqsadapter.NodeResult{Output: "late"}, nil
				}
				return sqsadapter.NodeResult{Output: map[string]any{"n": 2}}, nil
			}, want: runCompletes, wantB: 1},
		{name: "condition that fails to evaluate is false", a: ok(map[string]any{"n": map[string]any{"k": 1}}),
			cond: "result.output.n * 2 > 1", want: edgeNotTaken},
		{name: "input over the message size limit is read from the store", a: func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: map[string]any{"n": 2, "big": strings.Repeat("y", 300<<10)}}, nil
		}, want: runCompletes, wantB: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var bCalls atomic.Int32
			a := tc.a
			if a == nil {
				a = ok(map[string]any{"n": 2})
			}
			b := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				bCalls.Add(1)
				in, _ := nc.Input.(map[string]any)
				return sqsadapter.NodeResult{Output: len(in)}, nil
			}
			src := bpJSON
			if tc.cfgA != "" {
				src = strings.Replace(src, `{"id":"a","uses":"a"}`, `{"id":"a","uses":"a","config":`+tc.cfgA+`}`, 1)
			}
			if tc.cond != "" {
				src = strings.Replace(src, `"result.output.n > 1"`, strconv.Quote(tc.cond), 1)
			}
			bp := mustParse(t, src)
			e := newEnv(t, envConfig{workers: 2, maxReceiveCount: 2, visibility: badInputVisibility,
				registry: sqsadapter.NodeRegistry{"a": a, "b": b}, blueprints: []*sqsadapter.Blueprint{bp}})
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()

			var runID string
			if tc.body == nil {
				id, err := e.client.StartRun(ctx, "bad", nil)
				require.NoError(t, err)
				runID = id
			} else {
				if tc.want != deadLettered {
					// A run record for the raw job to belong to, with no job of its own.
					runID = "raw-" + strings.ReplaceAll(tc.name, " ", "-")
					require.NoError(t, e.contexts.CreateRun(ctx, store.RunRecord{
						RunID: runID, BlueprintID: "bad", BlueprintVersion: "1", Status: sqsadapter.StatusRunning,
					}, nil))
				}
				_, err := e.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &e.queue, MessageBody: aws.String(tc.body(runID))})
				require.NoError(t, err)
			}

			switch tc.want {
			case deadLettered:
				require.Eventually(t, func() bool { v, f, d := e.sqs.Len(e.dlq); return v+f+d == 1 }, 10*time.Second, unit,
					"the bad message did not reach the dead-letter queue")
				// The worker is still alive: a good run completes.
				st := e.run("bad", nil)
				assert.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
			case runFails:
				st, err := e.client.WaitForRun(ctx, runID)
				require.NoError(t, err)
				require.Equal(t, sqsadapter.StatusFailed, st.Status)
				assert.Contains(t, st.Error, tc.reason)
				assert.Zero(t, bCalls.Load(), "a node ran after its run failed")
			case runCompletes:
				st, err := e.client.WaitForRun(ctx, runID)
				require.NoError(t, err)
				require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
				assert.Equal(t, int32(1), bCalls.Load())
				assert.Equal(t, tc.wantB, st.Context["_outputs.b"], "b did not receive a's output")
			case edgeNotTaken:
				st, err := e.client.WaitForRun(ctx, runID)
				require.NoError(t, err)
				require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
				assert.Zero(t, bCalls.Load(), "b ran though its edge's condition failed")
				var counted int64
				for _, w := range e.workers {
					counted += w.ExpressionErrors()
				}
				assert.EqualValues(t, 1, counted, "the failed condition was not counted once")
			}
			require.Eventually(t, func() bool { v, f, d := e.sqs.Len(e.queue); return v+f+d == 0 }, 10*time.Second, unit, "messages left in the queue")
		})
	}

	t.Run("invalid blueprint file", func(t *testing.T) {
		t.Parallel()
		_, err := sqsadapter.ParseBlueprint([]byte(`{"id":"x","nodes":[{"id":"a","uses":"a"},{"id":"a","uses":""}],"edges":[{"source":"a","target":"missing"}]}`))
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
		for _, p := range []string{"more than once", "empty \"uses\"", "\"missing\" is not a node"} {
			assert.Contains(t, err.Error(), p)
		}
	})
}
