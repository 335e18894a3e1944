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
