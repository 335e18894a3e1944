package chaos

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
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
		x, err := interp.Run(bp, Initial(3, i), Model)
		require.NoError(t, err)
		if x.Status == sqsadapter.StatusCompleted {
			r = &run{id: "run-x", initial: Initial(3, i), exp: x}
		}
	}
	ctx := map[string]any{}
	for k, v := range r.exp.Context {
		ctx[k] = v
	}
	ctx[interp.CatchErrorKey] = r.exp.Catches[0]
	r.st = &sqsadapter.RunStatus{RunID: r.id, Status: sqsadapter.StatusCompleted, Context: ctx}

	honest := func() *Ledger {
		l := NewLedger("ctx", "status")
		for _, id := range r.exp.Nodes(interp.Ran) {
			l.Observe(commitExchange(r.id, id))
		}
		l.Observe(finishExchange(r.id, sqsadapter.StatusCompleted))
		return l
	}
	var sum Summary
	assert.Empty(t, verifyRun(r, honest(), &sum))
	assert.Equal(t, len(r.exp.Nodes(interp.Ran)), sum.Commits)

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
			problems := verifyRun(r, l, &sum)
			require.Len(t, problems, 1)
			assert.Contains(t, problems[0], tc.want)
		})
	}

	t.Run("missing commit and finish", func(t *testing.T) {
		var sum Summary
		problems := verifyRun(r, NewLedger("ctx", "status"), &sum)
		assert.Len(t, problems, len(r.exp.Nodes(interp.Ran))+1)
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
		problems := verifyRun(&bad, honest(), &sum)
		require.Len(t, problems, 1)
		assert.Contains(t, problems[0], "differs _outputs.finish")
	})

	t.Run("lost", func(t *testing.T) {
		lost := *r
		lost.st = nil
		var sum Summary
		assert.Equal(t, []string{"lost: not finished"}, verifyRun(&lost, honest(), &sum))
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
