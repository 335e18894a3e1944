package sqsadapter_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// An "any" join that is also a leaf must run before the run completes, even
// when the arrival that fires it is the last one.
func TestAnyJoinLeafRunsBeforeCompletion(t *testing.T) {
	t.Parallel()
	slowJoin := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		time.Sleep(50 * time.Millisecond) // lets the predecessors' checks run first
		return sqsadapter.NodeResult{Output: "joined"}, nil
	}
	bp := mustParse(t, `{"id":"anyleaf","nodes":[
	  {"id":"a","uses":"echo"},{"id":"b","uses":"echo"},{"id":"c","uses":"echo"},
	  {"id":"j","uses":"join","config":{"joinStrategy":"any"}}],
	 "edges":[{"source":"a","target":"b"},{"source":"a","target":"c"},{"source":"b","target":"j"},{"source":"c","target":"j"}]}`)
	e := newEnv(t, envConfig{workers: 2, registry: sqsadapter.NodeRegistry{"echo": echo, "join": slowJoin}, blueprints: []*sqsadapter.Blueprint{bp}})
	for range 5 {
		st := e.run("anyleaf", nil)
		require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		assert.Equal(t, "joined", st.Context["_outputs.j"], "the run completed before its any-join leaf ran")
	}
}
