package interp_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
)

// The built-ins: a wait and a webhook node are resumed with the model's
// answer, a wait paired with a webhook predecessor and a sleep pass their
// input on, and routing follows the resume's action.
func TestRunBuiltins(t *testing.T) {
	bp := parse(t, `{"id": "waits", "nodes": [
		{"id": "a", "uses": "emit", "params": {"out": {"v": 1}}},
		{"id": "w", "uses": "wait", "params": {"eventName": "approval", "out": {"ok": true}, "action": "yes"}},
		{"id": "y", "uses": "emit"}, {"id": "n", "uses": "emit"},
		{"id": "h", "uses": "webhook", "params": {"out": {"body": 7}}},
		{"id": "p", "uses": "wait", "params": {"eventName": "webhook:h"}},
		{"id": "s", "uses": "sleep", "params": {"duration": 10}}],
	  "edges": [{"source": "a", "target": "w"}, {"source": "w", "target": "y", "action": "yes"},
		{"source": "w", "target": "n", "action": "no"}, {"source": "a", "target": "h"},
		{"source": "h", "target": "p"}, {"source": "p", "target": "s", "transform": "input.body + 1"}]}`)
	var resumed []string
	r, err := interp.Run(bp, nil, func(c interp.Call) interp.Outcome {
		if c.Resume {
			resumed = append(resumed, c.NodeID)
		}
		return model(c)
	})
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
	assert.ElementsMatch(t, []string{"w", "h"}, resumed, "only unpaired waits and webhooks are resumed")
	assert.Equal(t, map[string]interp.Outcome{
		"w": {Output: map[string]any{"ok": true}, Action: "yes"},
		"h": {Output: map[string]any{"body": int64(7)}},
	}, r.Resumes)
	assert.Equal(t, interp.Ran, r.States["y"])
	assert.Equal(t, interp.Skipped, r.States["n"])
	assert.Equal(t, map[string]any{"body": int64(7)}, r.Outputs["p"], "a paired wait passes its input on")
	assert.Equal(t, int64(8), r.Outputs["s"], "a sleep outputs its input")

	// A resume cannot fail, write the context, or give a webhook an action.
	for name, o := range map[string]interp.Outcome{
		"error":  {Err: errors.New("no")},
		"writes": {Output: 1, Sets: map[string]any{"k": 1}},
		"action": {Output: 1, Action: "x"},
	} {
		_, err := interp.Run(bp, nil, func(c interp.Call) interp.Outcome {
			if c.Resume && c.NodeID == "h" {
				return o
			}
			return model(c)
		})
		assert.Error(t, err, name)
	}
	assert.Equal(t, "h", interp.PairedWebhook(bp, &bp.Nodes[5]))
	assert.Empty(t, interp.PairedWebhook(bp, &bp.Nodes[1]))
}

// A subflow node runs its child blueprint: mapped inputs and outputs, the
// input seeding the child's start nodes, terminal outputs, and a failing
// child failing each attempt of its node, then its fallback running.
func TestRunSubflow(t *testing.T) {
	child := parse(t, `{"id": "child", "nodes": [{"id": "c1", "uses": "emit"}, {"id": "c2", "uses": "emit", "params": {"set": {"k": 2}}},
		{"id": "c3", "uses": "emit", "params": {"out": "three"}}],
	  "edges": [{"source": "c1", "target": "c2"}]}`)
	broken := parse(t, `{"id": "broken", "nodes": [{"id": "b", "uses": "fail"}], "edges": []}`)
	bp := parse(t, `{"id": "parent", "nodes": [
		{"id": "a", "uses": "emit", "params": {"out": {"v": 1}}},
		{"id": "plain", "uses": "subflow", "params": {"blueprintId": "child"}},
		{"id": "mapped", "uses": "subflow", "params": {"blueprintId": "child", "inputs": {"x": "a", "y": "seed"}, "outputs": {"got": "c3", "k2": "k"}}},
		{"id": "bad", "uses": "subflow", "params": {"blueprintId": "broken"}, "config": {"maxRetries": 2, "fallback": "fb"}},
		{"id": "fb", "uses": "emit", "params": {"out": "saved"}}],
	  "edges": [{"source": "a", "target": "plain"}, {"source": "a", "target": "mapped"}, {"source": "a", "target": "bad"}]}`)
	r, err := interp.Run(bp, map[string]any{"seed": 5}, model, interp.WithBlueprints(child, broken))
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusCompleted, r.Status)
	assert.Equal(t, map[string]any{"c2": map[string]any{"v": int64(1)}, "c3": "three"}, r.Outputs["plain"], "terminal outputs, the input seeding start nodes")
	require.Len(t, r.Children["plain"], 1)
	assert.Equal(t, map[string]any{"v": int64(1)}, r.Children["plain"][0].Initial["_inputs.c1"])

	mapped, ok := r.Outputs["mapped"].(map[string]any)
	require.True(t, ok, "with outputs, the output is the child's context")
	assert.Equal(t, map[string]any{"v": int64(1)}, mapped["x"])
	assert.Equal(t, int64(5), mapped["y"])
	assert.NotContains(t, mapped, "_inputs.c1", "with inputs, no start node is seeded")
	assert.Equal(t, "three", r.Context["got"])
	assert.Equal(t, int64(2), r.Context["k2"])

	assert.Equal(t, "saved", r.Outputs["bad"])
	assert.Len(t, r.Children["bad"], 2, "one child per attempt")
	assert.Equal(t, 2, r.Attempts["bad"])
	require.Len(t, r.Catches, 1)
	assert.Contains(t, r.Catches[0]["message"], "Sub-workflow 'broken' did not complete successfully. Status: failed.")

	_, err = interp.Run(bp, nil, model)
	require.ErrorContains(t, err, `blueprint "child" is not given`)
}
