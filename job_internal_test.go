package sqsadapter

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// Job.marshal writes what json.Marshal writes.
func FuzzJobMarshal(f *testing.F) {
	f.Add("r", "b", "n", "", []byte(nil), int64(0), 0, 0, 0)
	f.Add("run-1", "bp", "node 1", "v1", []byte(` {"a": [1, 2.5, "x<y"]} `), int64(1700000000000), 3, 0, 0)
	f.Add("r\"1", "b<", "n&", "\u2028", []byte(`"\u2029"`), int64(-1), 0, 2, 5)
	f.Add("é", "b", "n", "v", []byte(`{bad`), int64(0), 0, 0, 1)
	f.Add("r", "b", "n", "v", []byte(`{}`), int64(0), -1, 0, 0)
	f.Fuzz(func(t *testing.T, run, bp, node, version string, input []byte, wake int64, item, page, iter int) {
		j := Job{RunID: run, BlueprintID: bp, NodeID: node, BlueprintVersion: version, Input: input, WakeAt: wake, Item: item, Page: page, Iter: iter}
		want, wantErr := json.Marshal(j)
		got, err := j.marshal()
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error())
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	})
}
