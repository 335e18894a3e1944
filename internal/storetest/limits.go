package storetest

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/limits"
)

// The limits suites check every limit of internal/limits at the limit
// (accepted) and just over it (refused, with the typed error), so that the
// in-memory implementations and the AWS ones (on DynamoDB Local and fauxqs)
// refuse exactly the same things.

// IDCase is one case of the id rule (limits.CheckID).
type IDCase struct {
	Name  string
	ID    string
	Valid bool
	// NotJSON marks an id that JSON cannot carry as it is (encoding/json
	// replaces invalid UTF-8), so validators of JSON never see it.
	NotJSON bool
}

// IDCases returns the cases of the id rule: 1 to limits.IDBytes bytes of
// valid UTF-8, not only white space, no control characters.
func IDCases() []IDCase {
	max := limits.IDBytes
	return []IDCase{
		{Name: "one byte", ID: "a", Valid: true},
		{Name: "at the limit", ID: strings.Repeat("i", max), Valid: true},
		{Name: "over the limit", ID: strings.Repeat("i", max+1)},
		{Name: "at the limit in 2-byte characters", ID: strings.Repeat("é", max/2), Valid: true},
		{Name: "over the limit by a 2-byte character", ID: strings.Repeat("i", max-1) + "é"},
		{Name: "empty", ID: ""},
		{Name: "spaces", ID: "   "},
		{Name: "Unicode white space", ID: "\u00a0\u2003\u3000"},
		{Name: "spaces around", ID: " a b ", Valid: true},
		{Name: "NUL", ID: "a\x00b"},
		{Name: "tab", ID: "a\tb"},
		{Name: "newline", ID: "a\n"},
		{Name: "U+001F", ID: "a\x1f"},
		{Name: "DEL", ID: "a\x7f"},
		{Name: "U+0080", ID: "a\u0080", Valid: true},
		{Name: "characters SQS refuses", ID: "a\ufffe\uffff", Valid: true},
		{Name: "punctuation", ID: `a:b/c@d"e'f\g{h}`, Valid: true},
		{Name: "emoji", ID: "🚀 日本", Valid: true},
		{Name: "invalid UTF-8", ID: "a\xffb", NotJSON: true},
	}
}

// TestIDRule runs check on every case of IDCases: a valid id passes, an
// invalid one fails with an error matching want. With fromJSON, the ids that
// JSON cannot carry are left out.
func TestIDRule(t *testing.T, fromJSON bool, want error, check func(t *testing.T, id string) error) {
	t.Helper()
	for _, c := range IDCases() {
		if fromJSON && c.NotJSON {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			err := check(t, c.ID)
			if c.Valid {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, want)
		})
	}
}

// TestContextStoreLimits runs the limits suite of sqsadapter.ContextStore.
// newStore is called once per subtest.
func TestContextStoreLimits(t *testing.T, newStore func(t *testing.T) sqsadapter.ContextStore) {
	run(t, newStore, []subtest[sqsadapter.ContextStore]{
		{name: "RunID", fn: testLimitRunID},
		{name: "NodeID", fn: testLimitNodeID},
	})
}

// testLimitRunID: every method taking a run id refuses one that breaks the
// id rule with ErrInvalidKey (GetRun and FinishRun: ErrRunNotFound, as no
// run can have it) and writes nothing; a valid one is taken.
func testLimitRunID(t *testing.T, s sqsadapter.ContextStore) {
	ctx := t.Context()
	TestIDRule(t, false, sqsadapter.ErrInvalidKey, func(t *testing.T, runID string) error {
		key := unique("key")
		if err := s.Set(ctx, runID, key, "v"); err != nil {
			// Refused: so is every other call, and nothing was written.
			calls := map[string]error{
				"CreateRun": s.CreateRun(ctx, sqsadapter.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, map[string]any{key: 1}),
				"Patch":     s.Patch(ctx, runID, map[string]any{key: "v"}, nil),
				"SkipNodes": s.SkipNodes(ctx, runID, []string{"n"}),
			}
			calls["Get"] = third(s.Get(ctx, runID, key))
			calls["GetMany"] = second(s.GetMany(ctx, runID, []string{key}))
			calls["Snapshot"] = second(s.Snapshot(ctx, runID))
			calls["ListNodes"] = second(s.ListNodes(ctx, runID))
			calls["GetNodes"] = second(s.GetNodes(ctx, runID, []string{"n"}))
			calls["Delete"] = second(s.Delete(ctx, runID, key))
			calls["AcquireNode"] = second(s.AcquireNode(ctx, runID, "n", "w", baseTime().Add(ttl), baseTime()))
			calls["CommitNode"] = second(s.CommitNode(ctx, runID, sqsadapter.NodeCommit{NodeID: "n", Output: 1}))
			for name, e := range calls {
				assert.ErrorIs(t, e, sqsadapter.ErrInvalidKey, name)
			}
			_, gerr := s.GetRun(ctx, runID)
			assert.ErrorIs(t, gerr, sqsadapter.ErrRunNotFound, "GetRun")
			ferr := s.FinishRun(ctx, runID, sqsadapter.StatusCompleted, "", "", baseTime())
			assert.ErrorIs(t, ferr, sqsadapter.ErrRunNotFound, "FinishRun")
			return err
		}
		got, ok, err := s.Get(ctx, runID, key)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, "v", got)
		err = s.CreateRun(ctx, sqsadapter.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, nil)
		if errors.Is(err, sqsadapter.ErrRunExists) {
			err = nil // a fixed id, created by an earlier test run on the same backing
		}
		return err
	})
}

// testLimitNodeID: a store takes a node id or an internal record name built
// from one (limits.CheckNodeRecordID): not empty, valid UTF-8, its record key
// at most limits.SortKeyBytes bytes; control characters are allowed.
func testLimitNodeID(t *testing.T, s sqsadapter.ContextStore) {
	ctx := t.Context()
	atLimit := strings.Repeat("n", limits.SortKeyBytes-len(limits.OutputsPrefix))
	for _, c := range []struct {
		name   string
		nodeID string
		valid  bool
	}{
		{"one byte", "a", true},
		{"record key at the limit", atLimit, true},
		{"record key over the limit", atLimit + "n", false},
		{"internal record name", "a@fallback", true},
		{"control characters", "a\x00\x1f\x7f", true},
		{"empty", "", false},
		{"invalid UTF-8", "a\xffb", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			runID := unique("run")
			now := baseTime()
			calls := map[string]func() error{
				"AcquireNode": func() error { return second(s.AcquireNode(ctx, runID, c.nodeID, "w", now.Add(ttl), now)) },
				"ExtendLease": func() error { return s.ExtendLease(ctx, runID, c.nodeID, "w", now.Add(2*ttl)) },
				"ReleaseLease": func() error {
					return s.ReleaseLease(ctx, runID, c.nodeID, "w")
				},
				"CommitNode": func() error {
					return second(s.CommitNode(ctx, runID, sqsadapter.NodeCommit{NodeID: c.nodeID, Output: "out"}))
				},
				"GetNodes": func() error { return second(s.GetNodes(ctx, runID, []string{c.nodeID})) },
				"FailNode": func() error {
					if _, err := s.FailNode(ctx, runID, c.nodeID, "failed"); !errors.Is(err, sqsadapter.ErrNodeCommitted) {
						return err
					}
					return nil
				},
				"SkipNodes":  func() error { return s.SkipNodes(ctx, runID, []string{c.nodeID}) },
				"CloseNodes": func() error { return s.CloseNodes(ctx, runID, []string{c.nodeID}) },
			}
			for _, name := range []string{"AcquireNode", "ExtendLease", "ReleaseLease", "CommitNode", "GetNodes", "FailNode", "SkipNodes", "CloseNodes"} {
				err := calls[name]()
				if c.valid {
					require.NoError(t, err, name)
				} else {
					require.ErrorIs(t, err, sqsadapter.ErrInvalidKey, name)
				}
			}
			recs, err := s.ListNodes(ctx, runID)
			require.NoError(t, err)
			if !c.valid {
				assert.Empty(t, recs, "nothing written")
				return
			}
			require.Contains(t, recs, c.nodeID)
			assert.Equal(t, "out", recs[c.nodeID].Output)
			got, ok, err := s.Get(ctx, runID, limits.OutputsPrefix+c.nodeID)
			require.NoError(t, err)
			assert.True(t, ok)
			assert.Equal(t, "out", got)
		})
	}
}

// second returns the error of a two-result call.
func second[T any](_ T, err error) error { return err }

// third returns the error of a three-result call.
func third[T, U any](_ T, _ U, err error) error { return err }
