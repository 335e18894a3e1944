package sqsadapter_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

func echo(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	return sqsadapter.NodeResult{Output: map[string]any{"node": nc.NodeID, "input": nc.Input}}, nil
}

func TestChainRuns(t *testing.T) {
	t.Parallel()
	bp := mustParse(t, `{"id":"chain","nodes":[{"id":"a","uses":"echo"},{"id":"b","uses":"echo"},{"id":"c","uses":"echo"}],
	 "edges":[{"source":"a","target":"b"},{"source":"b","target":"c"}]}`)
	e := newEnv(t, envConfig{workers: 2, registry: sqsadapter.NodeRegistry{"echo": echo}, blueprints: []*sqsadapter.Blueprint{bp}})
	st := e.run("chain", map[string]any{"_inputs.a": "hello"})
	require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
	assert.Equal(t, map[string]any{"node": "a", "input": "hello"}, st.Context["_outputs.a"])
	assert.Equal(t, map[string]any{"node": "c", "input": map[string]any{"node": "b", "input": map[string]any{"node": "a", "input": "hello"}}}, st.Context["_outputs.c"])
}
