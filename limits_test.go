package sqsadapter_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// sqsRefused holds the characters SQS refuses in a message body that a JSON
// string can carry raw (U+FFFE, U+FFFF), next to allowed ones around them.
const sqsRefused = "a\ufffeb\uffffc \ufffd\U0001f680\u007f"

// TestSQSRefusedCharactersRoundTrip: values holding characters SQS refuses
// in a message body travel in jobs (a node's output to its successor, a
// start node's input) and reach the final context exactly.
func TestSQSRefusedCharactersRoundTrip(t *testing.T) {
	t.Parallel()
	echo := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.Input}, nil
	}
	generated := map[string]any{"text": sqsRefused, "list": []any{"\uffff", int64(1)}, "key\ufffe": true}
	e := newEnv(t, envConfig{
		workers: 1,
		registry: sqsadapter.NodeRegistry{
			"echo": echo,
			"generate": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				return sqsadapter.NodeResult{Output: generated}, nil
			},
		},
		blueprints: []*sqsadapter.Blueprint{
			mustParse(t, `{"id": "output", "nodes": [
				{"id": "gen", "uses": "generate"},
				{"id": "next", "uses": "echo"}
			], "edges": [{"source": "gen", "target": "next"}]}`),
			mustParse(t, `{"id": "input", "nodes": [
				{"id": "start", "uses": "echo"},
				{"id": "next", "uses": "echo"}
			], "edges": [{"source": "start", "target": "next"}]}`),
		},
	})

	t.Run("node output", func(t *testing.T) {
		id := startRun(t, e.client, "output", nil)
		st := waitRun(t, e.client, id, 5*time.Second)
		require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		assert.Equal(t, generated, st.Context["_outputs.gen"])
		assert.Equal(t, generated, st.Context["_outputs.next"], "carried in the successor's job")
	})
	t.Run("start input", func(t *testing.T) {
		initial := map[string]any{"_inputs.start": sqsRefused, "key\uffff": sqsRefused}
		id := startRun(t, e.client, "input", initial)
		st := waitRun(t, e.client, id, 5*time.Second)
		require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		assert.Equal(t, sqsRefused, st.Context["_outputs.start"], "carried in the start job")
		assert.Equal(t, sqsRefused, st.Context["_outputs.next"])
		assert.Equal(t, sqsRefused, st.Context["key\uffff"])
		assert.Equal(t, sqsRefused, st.Context["_inputs.start"])
	})
}
