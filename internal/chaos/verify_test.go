package chaos

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/store"
)

// commitExchange is the DynamoDB request of a node commit, as the store
// sends it (an UpdateItem), answered 200.
func commitExchange(run, node string) Exchange {
	req, _ := json.Marshal(map[string]any{
		"TableName":                 "ctx",
		"Key":                       map[string]any{"runId": map[string]string{"S": run}, "key": map[string]string{"S": "_outputs." + node}},
		"UpdateExpression":          "REMOVE #2, #3\nSET #0 = :0, #1 = :1\n",
		"ExpressionAttributeNames":  map[string]string{"#0": "state", "#1": "value", "#2": "leaseOwner", "#3": "leaseUntil"},
		"ExpressionAttributeValues": map[string]any{":0": map[string]string{"S": "committed"}, ":1": map[string]any{"N": "1"}},
	})
	return Exchange{Service: ServiceDynamoDB, Operation: "UpdateItem", Request: req, Status: 200}
}

func finishExchange(run string, status sqsadapter.RunState) Exchange {
	req, _ := json.Marshal(map[string]any{
		"TableName":                 "status",
		"Key":                       map[string]any{"runId": map[string]string{"S": run}},
		"UpdateExpression":          "SET #0 = :0",
		"ExpressionAttributeNames":  map[string]string{"#0": "status"},
		"ExpressionAttributeValues": map[string]any{":0": map[string]string{"S": string(status)}},
	})
	return Exchange{Service: ServiceDynamoDB, Operation: "UpdateItem", Request: req, Status: 200}
}

// TestVerifyRun checks that the per-run checks catch what they must: a
// second commit of a node, a commit of a node that should not run, a
// missing commit, a final status written twice or never.
func TestVerifyRun(t *testing.T) {
	bp, err := Blueprint()
	require.NoError(t, err)
	var r *run
	for i := 0; r == nil; i++ {
		x, resumes, err := Expect(bp, Initial(3, i))
		require.NoError(t, err)
		// A completed run that waits for a person and sleeps.
		if x.Status == sqsadapter.StatusCompleted && x.Is("manualReview", interp.Ran) && x.Is("settle", interp.Ran) {
			r = &run{id: "run-x", initial: Initial(3, i), exp: x, resumes: resumes}
		}
	}
	ctx := map[string]any{}
	for k, v := range r.exp.Context {
		ctx[k] = v
	}
	ctx[interp.CatchErrorKey] = r.exp.Catches[0]
	nodes := map[string]sqsadapter.NodeStatus{}
	wake := time.Now()
	for _, id := range r.exp.Nodes(interp.Ran) {
		if strings.Contains(id, "\x1f") {
			continue // a batch item's record: the status counts it on its scatter
		}
		ns := sqsadapter.NodeStatus{State: "completed", UpdatedAt: wake.Add(time.Millisecond)}
		switch id {
		case "manualReview":
			ns.Wait = &store.Wait{Reason: "external_event"}
		case "settle", "cooldown", "hold":
			ns.Wait = &store.Wait{Reason: "timer", WakeAt: wake}
		}
		nodes[id] = ns
	}
	for s, items := range r.exp.Items {
		ns := nodes[s]
		ns.BatchItems = len(items)
		for _, it := range items {
			if it.State == interp.Ran {
				ns.BatchCompleted++
			} else {
				ns.BatchFailed++
			}
		}
		nodes[s] = ns
	}
	r.st = &sqsadapter.RunStatus{RunID: r.id, Status: sqsadapter.StatusCompleted, Context: ctx, Nodes: nodes}
	driver := func(succeeded int) *resumer {
		rs := newResumer(nil, 0, 0)
		rs.tallies[RunNode{r.id, "manualReview"}] = &ResumeTally{Kind: "wait", Mode: ModeConcurrent, Calls: 3, Succeeded: succeeded, NotWaiting: 3 - succeeded}
		return rs
	}

	honest := func() *Ledger {
		l := NewLedger("ctx", "status")
		for _, id := range ranRecords(r.exp) {
			l.Observe(commitExchange(r.id, id))
		}
		l.Observe(finishExchange(r.id, sqsadapter.StatusCompleted))
		return l
	}
	var sum Summary
	assert.Empty(t, verifyRun(r, honest(), driver(1), &sum))
	assert.Equal(t, len(ranRecords(r.exp)), sum.Commits)
	assert.Equal(t, 1, sum.Resumed)
	assert.Equal(t, 3, sum.ResumeCalls)
	assert.Equal(t, 2, sum.Refused)
	assert.Positive(t, sum.Sleeps)

	for name, tc := range map[string]struct {
		tamper func(*Ledger)
		want   string
	}{
		"duplicate commit":  {func(l *Ledger) { l.Observe(commitExchange(r.id, "decide")) }, "node decide committed 2 times"},
		"unexpected commit": {func(l *Ledger) { l.Observe(commitExchange(r.id, r.exp.Nodes(interp.Skipped)[0])) }, "but the interpreter has it skipped"},
		"double finish":     {func(l *Ledger) { l.Observe(finishExchange(r.id, sqsadapter.StatusFailed)) }, "final status written 2 times"},
	} {
		t.Run(name, func(t *testing.T) {
			l := honest()
			tc.tamper(l)
			var sum Summary
			problems := verifyRun(r, l, driver(1), &sum)
			require.Len(t, problems, 1)
			assert.Contains(t, problems[0], tc.want)
		})
	}

	t.Run("missing commit and finish", func(t *testing.T) {
		var sum Summary
		problems := verifyRun(r, NewLedger("ctx", "status"), driver(0), &sum)
		// Every node's commit, the final status and the resume of the
		// wait node (twice: no commit, and never resumed).
		assert.Len(t, problems, len(ranRecords(r.exp))+1+1)
		assert.Equal(t, 1, sum.MissingFinishes)
	})

	t.Run("wrong context", func(t *testing.T) {
		bad := *r
		st := *r.st
		st.Context = map[string]any{}
		for k, v := range r.st.Context {
			st.Context[k] = v
		}
		st.Context["_outputs.finish"] = "something else"
		bad.st = &st
		var sum Summary
		problems := verifyRun(&bad, honest(), driver(1), &sum)
		require.Len(t, problems, 1)
		assert.Contains(t, problems[0], "differs _outputs.finish")
	})

	t.Run("resumed twice", func(t *testing.T) {
		var sum Summary
		problems := verifyRun(r, honest(), driver(2), &sum)
		require.Len(t, problems, 1)
		assert.Contains(t, problems[0], "node manualReview resumed by 2 calls")
		assert.Equal(t, 1, sum.DoubleResumes)
	})

	t.Run("completed while a node waits", func(t *testing.T) {
		bad := *r
		st := *r.st
		st.Nodes = maps.Clone(r.st.Nodes)
		st.Nodes["manualReview"] = sqsadapter.NodeStatus{State: "waiting", Wait: &store.Wait{Reason: "external_event"}}
		bad.st = &st
		var sum Summary
		problems := verifyRun(&bad, honest(), driver(1), &sum)
		require.Len(t, problems, 2)
		assert.Contains(t, problems[0], "the run is completed while node manualReview waits")
		assert.Contains(t, problems[1], "node manualReview of the completed run was never resumed")
		assert.Equal(t, 1, sum.WaitingAtEnd)
	})

	t.Run("sleep woke early", func(t *testing.T) {
		bad := *r
		st := *r.st
		st.Nodes = maps.Clone(r.st.Nodes)
		ns := st.Nodes["settle"]
		ns.UpdatedAt = wake.Add(-time.Second)
		st.Nodes["settle"] = ns
		bad.st = &st
		var sum Summary
		problems := verifyRun(&bad, honest(), driver(1), &sum)
		require.Len(t, problems, 1)
		assert.Contains(t, problems[0], "sleep node settle woke at")
	})

	t.Run("lost", func(t *testing.T) {
		lost := *r
		lost.st = nil
		var sum Summary
		assert.Equal(t, []string{"lost: not finished"}, verifyRun(&lost, honest(), driver(1), &sum))
		assert.Equal(t, 1, sum.Lost)
	})
}

// TestSummaryLine checks the summary is one line with the verdict.
func TestSummaryLine(t *testing.T) {
	s := Summary{Seed: 7, Runs: 2, Completed: 2, Correct: 2, Kills: 3,
		Faults: FaultCounts{Requests: 100, Before: 3, After: 2, ByKind: map[string]int64{FaultReset: 5}}}
	line := s.String()
	assert.NotContains(t, line, "\n")
	assert.Contains(t, line, "faulted=5 (5.0%")
	assert.Contains(t, line, "reset=5")
	assert.True(t, strings.HasSuffix(line, "verdict=PASS"), line)
	s.Problems = []string{"x"}
	assert.True(t, strings.HasSuffix(s.String(), "verdict=FAIL (1 problems)"), s.String())
	_ = fmt.Sprint(s)
}

// A loop's later passes are expected commits when the interpreter ran
// them, under the engine's record names; its done record is internal.
func TestExpectedCommit(t *testing.T) {
	t.Parallel()
	exp := &interp.Result{States: map[string]interp.State{"refine": interp.Ran, "again": interp.Ran, "other": interp.Skipped},
		Passes: map[string][]int{"refine": {0, 1, 2}, "again": {0, 1, 2}}}
	for rid, want := range map[string]bool{
		"refine": true, "refine\x1f@2": true, "again\x1f@1": true, "again\x1floop": true,
		"refine\x1f@3": false, "other": false, "ghost": false, "refine\x1f@x": false,
	} {
		assert.Equal(t, want, expectedCommit(exp, rid), "%q", rid)
	}
	assert.Equal(t, "refine\x1f@2", passRecord("refine", 2))
}
