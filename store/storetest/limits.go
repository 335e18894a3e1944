package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/store"
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

// TestContextStoreLimits runs the limits suite of store.ContextStore.
// newStore is called once per subtest.
func TestContextStoreLimits(t *testing.T, newStore func(t *testing.T) store.ContextStore) {
	run(t, newStore, []subtest[store.ContextStore]{
		{name: "RunID", fn: testLimitRunID},
		{name: "NodeID", fn: testLimitNodeID},
		{name: "ContextKey", fn: testLimitContextKey},
		{name: "ItemSize", fn: testLimitItemSize},
		{name: "NodeRecordSize", fn: testLimitNodeRecordSize},
		{name: "RunRecordSize", fn: testLimitRunRecordSize},
		{name: "TransactionItems", fn: testLimitTransactionItems},
		{name: "TransactionBytes", fn: testLimitTransactionBytes},
		{name: "BatchGetKeys", fn: testLimitBatchGetKeys},
		{name: "ReasonBytes", fn: testLimitReasonBytes},
	})
}

// TestCoordinationStoreLimits runs the limits suite of
// store.CoordinationStore. newStore is called once per subtest.
func TestCoordinationStoreLimits(t *testing.T, newStore func(t *testing.T) store.CoordinationStore) {
	run(t, newStore, []subtest[store.CoordinationStore]{
		{name: "CoordinationKey", fn: testLimitCoordinationKey},
		{name: "BatchGetKeys", fn: testLimitGetJoins},
	})
}

// testLimitRunID: every method taking a run id refuses one that breaks the
// id rule with ErrInvalidKey (GetRun and FinishRun: ErrRunNotFound, as no
// run can have it) and writes nothing; a valid one is taken.
func testLimitRunID(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	TestIDRule(t, false, store.ErrInvalidKey, func(t *testing.T, runID string) error {
		key := unique("key")
		if err := s.Set(ctx, runID, key, "v"); err != nil {
			// Refused: so is every other call, and nothing was written.
			calls := map[string]error{
				"CreateRun": s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, map[string]any{key: 1}),
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
			calls["CommitNode"] = second(s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: 1}))
			for name, e := range calls {
				assert.ErrorIs(t, e, store.ErrInvalidKey, name)
			}
			_, gerr := s.GetRun(ctx, runID)
			assert.ErrorIs(t, gerr, store.ErrRunNotFound, "GetRun")
			ferr := s.FinishRun(ctx, runID, store.StatusCompleted, "", "", baseTime())
			assert.ErrorIs(t, ferr, store.ErrRunNotFound, "FinishRun")
			return err
		}
		got, ok, err := s.Get(ctx, runID, key)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Equal(t, "v", got)
		err = s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, nil)
		if errors.Is(err, store.ErrRunExists) {
			err = nil // a fixed id, created by an earlier test run on the same backing
		}
		return err
	})
}

// testLimitNodeID: a store takes a node id or an internal record name built
// from one (limits.CheckNodeRecordID): not empty, valid UTF-8, its record key
// at most limits.SortKeyBytes bytes; control characters are allowed.
func testLimitNodeID(t *testing.T, s store.ContextStore) {
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
			// In this order, so that each call on a valid id succeeds.
			calls := []struct {
				name string
				call func() error
			}{
				{"AcquireNode", func() error { return second(s.AcquireNode(ctx, runID, c.nodeID, "w", now.Add(ttl), now)) }},
				{"ExtendLease", func() error { return s.ExtendLease(ctx, runID, c.nodeID, "w", now.Add(2*ttl)) }},
				{"ReleaseLease", func() error { return s.ReleaseLease(ctx, runID, c.nodeID, "w") }},
				{"CommitNode", func() error {
					return second(s.CommitNode(ctx, runID, store.NodeCommit{NodeID: c.nodeID, Output: "out"}))
				}},
				{"GetNodes", func() error { return second(s.GetNodes(ctx, runID, []string{c.nodeID})) }},
				{"FailNode", func() error {
					if _, err := s.FailNode(ctx, runID, c.nodeID, "failed"); !errors.Is(err, store.ErrNodeCommitted) {
						return err
					}
					return nil
				}},
				{"SkipNodes", func() error { return s.SkipNodes(ctx, runID, []string{c.nodeID}) }},
				{"CloseNodes", func() error { return s.CloseNodes(ctx, runID, []string{c.nodeID}) }},
			}
			for _, c2 := range calls {
				err := c2.call()
				if c.valid {
					require.NoError(t, err, c2.name)
				} else {
					require.ErrorIs(t, err, store.ErrInvalidKey, c2.name)
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

// padTo returns a string key of exactly n bytes that no other test uses.
func padTo(t *testing.T, prefix string, n int) string {
	t.Helper()
	k := unique(prefix)
	require.LessOrEqual(t, len(k), n)
	return k + strings.Repeat("k", n-len(k))
}

// testLimitContextKey: a context key is at most limits.ContextKeyBytes
// bytes, not empty and not reserved; a read key may be a node record's.
func testLimitContextKey(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	atLimit := padTo(t, "key", limits.ContextKeyBytes)
	require.NoError(t, s.Set(ctx, runID, atLimit, "v"))
	got, ok, err := s.Get(ctx, runID, atLimit)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "v", got)
	require.NoError(t, s.Patch(ctx, runID, map[string]any{atLimit: "w"}, nil))
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: 1, Sets: map[string]any{atLimit: "x"}})
	require.NoError(t, err)
	existed, err := s.Delete(ctx, runID, atLimit)
	require.NoError(t, err)
	assert.True(t, existed)
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: unique("run"), BlueprintID: "bp", CreatedAt: baseTime()}, map[string]any{atLimit: 1}))

	// A node record's key, read: at most the same length.
	nodeKey := limits.OutputsPrefix + strings.Repeat("n", limits.ContextKeyBytes-len(limits.OutputsPrefix))
	_, ok, err = s.Get(ctx, runID, nodeKey)
	require.NoError(t, err)
	assert.False(t, ok)
	_, err = s.GetMany(ctx, runID, []string{nodeKey})
	require.NoError(t, err)

	for name, key := range map[string]string{"over the limit": atLimit + "k", "empty": "", "reserved": limits.OutputsPrefix + "n"} {
		t.Run(name, func(t *testing.T) {
			other := unique("run")
			calls := map[string]error{
				"Set":            s.Set(ctx, runID, key, "v"),
				"Delete":         second(s.Delete(ctx, runID, key)),
				"Patch set":      s.Patch(ctx, runID, map[string]any{key: "v"}, nil),
				"Patch del":      s.Patch(ctx, runID, nil, []string{key}),
				"CommitNode set": second(s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "m", Output: 1, Sets: map[string]any{key: "v"}})),
				"CommitNode del": second(s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "m", Output: 1, Deletes: []string{key}})),
				"CreateRun":      s.CreateRun(ctx, store.RunRecord{RunID: other, BlueprintID: "bp", CreatedAt: baseTime()}, map[string]any{key: 1}),
			}
			if key != limits.OutputsPrefix+"n" {
				calls["Get"] = third(s.Get(ctx, runID, key))
				calls["GetMany"] = second(s.GetMany(ctx, runID, []string{key}))
			}
			for name, err := range calls {
				assert.ErrorIs(t, err, store.ErrInvalidKey, name)
			}
			_, err := s.GetRun(ctx, other)
			assert.ErrorIs(t, err, store.ErrRunNotFound, "the refused CreateRun wrote nothing")
		})
	}
	_, _, err = s.Get(ctx, runID, nodeKey+"n")
	assert.ErrorIs(t, err, store.ErrInvalidKey, "a read key over the limit")
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"_outputs.n": int64(1)}, snap, "the refused writes wrote nothing")
}

// sizedValues returns values of several shapes whose item at key of runID
// has the estimated size size (limits.ItemSize of limits.ValueSize): a
// string, a native map and list, and a value DynamoDB cannot hold natively
// (stored as JSON).
func sizedValues(t *testing.T, runID, key string, size int) map[string]any {
	t.Helper()
	pad := func(shape func(pad string) any) any {
		base := limits.ItemSize(runID, key, limits.ValueSize(normalize(t, shape(""))))
		require.Less(t, base, size)
		return shape(strings.Repeat("x", size-base))
	}
	return map[string]any{
		"string": pad(func(p string) any { return p }),
		"map and list": pad(func(p string) any {
			return map[string]any{"list": []any{int64(-1234567), 1.5, true, nil, "é", []any{}, map[string]any{}}, "pad": p}
		}),
		"not native": pad(func(p string) any {
			return map[string]any{"": "empty key", "big": 1e200, "tiny": 1e-200, "pad": p}
		}),
	}
}

// testLimitItemSize: a context item is at most limits.ItemBytes, estimated
// as limits.ItemSize of limits.ValueSize; over it a write is refused with a
// *ValueTooLargeError naming the run, the key and the size, and writes
// nothing.
func testLimitItemSize(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	const key = "k"
	writes := map[string]func(runID string, v any) error{
		"Set": func(runID string, v any) error { return s.Set(ctx, runID, key, v) },
		"Patch": func(runID string, v any) error {
			return s.Patch(ctx, runID, map[string]any{key: v}, []string{"other"})
		},
		"CommitNode": func(runID string, v any) error {
			return second(s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "o", Sets: map[string]any{key: v}}))
		},
		"CreateRun": func(runID string, v any) error {
			return s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, map[string]any{key: v})
		},
	}
	// Every shape of value through Set (both stores size them alike), and
	// a string through every other write.
	cases := [][2]string{{"Set", "string"}, {"Set", "map and list"}, {"Set", "not native"},
		{"Patch", "string"}, {"CommitNode", "string"}, {"CreateRun", "string"}}
	for _, over := range []int{0, 1} {
		for _, c := range cases {
			write, shape := c[0], c[1]
			t.Run(fmt.Sprintf("%s/%s over by %d", write, shape, over), func(t *testing.T) {
				runID := unique("run")
				v := sizedValues(t, runID, key, limits.ItemBytes+over)[shape]
				err := writes[write](runID, v)
				if over == 0 {
					require.NoError(t, err)
					got, ok, err := s.Get(ctx, runID, key)
					require.NoError(t, err)
					require.True(t, ok)
					assertLarge(t, normalize(t, v), got)
					return
				}
				var vt *store.ValueTooLargeError
				require.ErrorAs(t, err, &vt)
				assert.ErrorIs(t, err, store.ErrValueTooLarge)
				assert.Equal(t, store.ValueTooLargeError{RunID: runID, Key: key, Size: limits.ItemBytes + 1, Limit: limits.ItemBytes}, *vt)
				snap, err := s.Snapshot(ctx, runID)
				require.NoError(t, err)
				assert.Empty(t, snap, "nothing written")
			})
		}
	}
}

// testLimitNodeRecordSize: a committed node record (output, staged inputs,
// action, fallback, taken targets) is at most limits.ItemBytes, estimated as
// limits.NodeRecordSize.
func testLimitNodeRecordSize(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	staged := map[string]any{"x": "staged", "y": []any{int64(1), 2.5}}
	taken := []string{"x", "y"}
	for _, over := range []int{0, 1} {
		t.Run(fmt.Sprintf("over by %d", over), func(t *testing.T) {
			runID := unique("run")
			base := limits.NodeRecordSize(runID, "n", 0, limits.ValueSize(normalize(t, staged)), "go", "fb", taken)
			out := strings.Repeat("o", limits.ItemBytes+over-base)
			c := store.NodeCommit{NodeID: "n", Output: out, Action: "go", Fallback: "fb", Taken: taken, Staged: staged, Sets: map[string]any{"k": "v"}}
			rec, err := s.CommitNode(ctx, runID, c)
			if over == 0 {
				require.NoError(t, err)
				assertLarge(t, out, rec.Output)
				assert.Equal(t, normalize(t, staged), rec.Staged)
				return
			}
			var vt *store.ValueTooLargeError
			require.ErrorAs(t, err, &vt)
			assert.Equal(t, store.ValueTooLargeError{RunID: runID, Key: "_outputs.n", Size: limits.ItemBytes + 1, Limit: limits.ItemBytes}, *vt)
			recs, err := s.ListNodes(ctx, runID)
			require.NoError(t, err)
			assert.Empty(t, recs, "no node record written")
			snap, err := s.Snapshot(ctx, runID)
			require.NoError(t, err)
			assert.Empty(t, snap, "no context write")
		})
	}
}

// testLimitRunRecordSize: a run record is at most limits.ItemBytes,
// estimated as limits.RunRecordSize.
func testLimitRunRecordSize(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	for _, over := range []int{0, 1} {
		t.Run(fmt.Sprintf("over by %d", over), func(t *testing.T) {
			runID := unique("run")
			version := strings.Repeat("v", limits.ItemBytes+over-limits.RunRecordSize(runID, "bp", ""))
			err := s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", BlueprintVersion: version, CreatedAt: baseTime()}, nil)
			if over == 0 {
				require.NoError(t, err)
				got, err := s.GetRun(ctx, runID)
				require.NoError(t, err)
				assertLarge(t, version, got.BlueprintVersion)
				return
			}
			var vt *store.ValueTooLargeError
			require.ErrorAs(t, err, &vt)
			assert.Equal(t, store.ValueTooLargeError{RunID: runID, Key: "(run record)", Size: limits.ItemBytes + 1, Limit: limits.ItemBytes}, *vt)
			_, err = s.GetRun(ctx, runID)
			assert.ErrorIs(t, err, store.ErrRunNotFound)
		})
	}
}

// keys returns n distinct context keys.
func keys(prefix string, n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return ks
}

func setsOf(ks []string, v any) map[string]any {
	m := make(map[string]any, len(ks))
	for _, k := range ks {
		m[k] = v
	}
	return m
}

// testLimitTransactionItems: writes that go together are one transaction
// of at most limits.TransactItems items: CreateRun takes the run record and
// 99 initial keys, CommitNode the node record and 99 context writes, Patch
// 100 changes. One more is refused with ErrValueTooLarge, writing nothing.
func testLimitTransactionItems(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	max := limits.TransactItems
	for _, over := range []int{0, 1} {
		t.Run(fmt.Sprintf("over by %d", over), func(t *testing.T) {
			check := func(name, runID string, err error, want map[string]any) {
				t.Helper()
				if over == 1 {
					require.ErrorIs(t, err, store.ErrValueTooLarge, name)
					want = map[string]any{}
				} else {
					require.NoError(t, err, name)
				}
				snap, err := s.Snapshot(ctx, runID)
				require.NoError(t, err)
				assert.Equal(t, want, snap, name)
			}

			runID := unique("run")
			initial := setsOf(keys("k", max-1+over), "v")
			err := s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, initial)
			check("CreateRun", runID, err, initial)

			runID = unique("run")
			half := (max - 1 + over) / 2
			require.NoError(t, s.Patch(ctx, runID, setsOf(keys("gone", half), true), nil))
			sets := setsOf(keys("k", max-1+over-half), "v")
			_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "o", Sets: sets, Deletes: keys("gone", half)})
			if over == 1 {
				require.ErrorIs(t, err, store.ErrValueTooLarge, "CommitNode")
				snap, err := s.Snapshot(ctx, runID)
				require.NoError(t, err)
				assert.Equal(t, setsOf(keys("gone", half), true), snap, "the refused commit wrote nothing")
			} else {
				want := maps.Clone(sets)
				want["_outputs.n"] = "o"
				check("CommitNode", runID, err, want)
			}

			runID = unique("run")
			changes := setsOf(keys("k", max+over-1), "v")
			err = s.Patch(ctx, runID, changes, []string{"absent"})
			check("Patch", runID, err, changes)
		})
	}
}

// sizedSets returns n context writes for runID whose items' estimated sizes
// add up to total, each within limits.ItemBytes.
func sizedSets(t *testing.T, runID string, n, total int) map[string]any {
	t.Helper()
	sets := make(map[string]any, n)
	for i, k := range keys("big", n) {
		size := total / n
		if i == n-1 {
			size = total - (n-1)*(total/n)
		}
		require.LessOrEqual(t, size, limits.ItemBytes)
		sets[k] = strings.Repeat("x", size-limits.ItemSize(runID, k))
	}
	return sets
}

// testLimitTransactionBytes: writes that go together are one transaction of
// at most limits.TransactBytes, estimated as limits.TransactionBytes (the
// items written, and each key deleted). One byte more is refused with
// ErrValueTooLarge, writing nothing.
func testLimitTransactionBytes(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	const n = 11 // items of about 380 KB
	for _, over := range []int{0, 1} {
		t.Run(fmt.Sprintf("over by %d", over), func(t *testing.T) {
			total := limits.TransactBytes + over
			// Reading back one written key is enough: writes that go
			// together are atomic (see the ContextStore suite), and reading
			// 4 MB back is slow under the race detector.
			check := func(name, runID string, err error, want map[string]any) {
				t.Helper()
				if over == 1 {
					require.ErrorIs(t, err, store.ErrValueTooLarge, name)
					var vt *store.ValueTooLargeError
					assert.False(t, errors.As(err, &vt), "%s: no single item is too large", name)
					snap, err := s.Snapshot(ctx, runID)
					require.NoError(t, err)
					assert.Empty(t, snap, "%s wrote nothing", name)
					return
				}
				require.NoError(t, err, name)
				k := slices.Max(slices.Collect(maps.Keys(want)))
				got, ok, err := s.Get(ctx, runID, k)
				require.NoError(t, err)
				require.True(t, ok, "%s wrote %s", name, k)
				assertLarge(t, want[k], got, name)
			}

			runID := unique("run")
			record := limits.RunRecordSize(runID, "bp", "")
			initial := sizedSets(t, runID, n, total-record)
			err := s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, initial)
			check("CreateRun", runID, err, initial)

			runID = unique("run")
			node := limits.NodeRecordSize(runID, "n", limits.ValueSize("o"), 0, "", "", nil)
			deleted := limits.ItemSize(runID, "gone")
			sets := sizedSets(t, runID, n, total-node-deleted)
			_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "o", Sets: sets, Deletes: []string{"gone", "gone"}})
			want := maps.Clone(sets)
			want["_outputs.n"] = "o"
			check("CommitNode", runID, err, want)

			runID = unique("run")
			sets = sizedSets(t, runID, n, total-deleted)
			err = s.Patch(ctx, runID, sets, []string{"gone"})
			check("Patch", runID, err, sets)
		})
	}
}

// testLimitBatchGetKeys: reads of more than limits.BatchGetKeys keys are
// served whole (the DynamoDB store pages them).
func testLimitBatchGetKeys(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	for _, n := range []int{limits.BatchGetKeys, limits.BatchGetKeys + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			runID := unique("run")
			ks := keys("k", n)
			require.NoError(t, s.Patch(ctx, runID, setsOf(ks[:n/2], "v"), nil))
			require.NoError(t, s.Patch(ctx, runID, setsOf(ks[n/2:], "v"), nil))
			got, err := s.GetMany(ctx, runID, ks)
			require.NoError(t, err)
			assert.Equal(t, setsOf(ks, "v"), got)

			ids := keys("n", n)
			require.NoError(t, s.SkipNodes(ctx, runID, ids))
			recs, err := s.GetNodes(ctx, runID, ids)
			require.NoError(t, err)
			assert.Len(t, recs, n)
		})
	}
}

// testLimitReasonBytes: a failure reason is kept up to limits.ReasonBytes
// bytes; a longer one is truncated to it, with a mark.
func testLimitReasonBytes(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	for _, over := range []int{0, 1} {
		t.Run(fmt.Sprintf("over by %d", over), func(t *testing.T) {
			reason := strings.Repeat("é", limits.ReasonBytes/2-1) + "ab" + strings.Repeat("c", over)
			want := limits.TruncateReason(reason)
			if over == 0 {
				require.Equal(t, reason, want)
			} else {
				require.NotEqual(t, reason, want)
				require.LessOrEqual(t, len(want), limits.ReasonBytes)
			}
			runID := unique("run")
			rec, err := s.FailNode(ctx, runID, "n", reason)
			require.NoError(t, err)
			assertLarge(t, want, rec.Error, "FailNode")
			require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, nil))
			require.NoError(t, s.FinishRun(ctx, runID, store.StatusFailed, reason, "n", baseTime()))
			run, err := s.GetRun(ctx, runID)
			require.NoError(t, err)
			assertLarge(t, want, run.Error, "FinishRun")
		})
	}
}

// testLimitCoordinationKey: a coordination key is 1 to
// limits.CoordinationKeyBytes bytes; every method refuses another with
// ErrInvalidKey.
func testLimitCoordinationKey(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	max := limits.CoordinationKeyBytes
	lock, counter, join := padTo(t, "lock", max), padTo(t, "counter", max), padTo(t, "join", max)
	set, err := s.SetIfNotExist(ctx, lock, "v", ttl)
	require.NoError(t, err)
	assert.True(t, set)
	got, ok, err := s.Get(ctx, lock)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "v", got)
	ok, err = s.ExtendTTL(ctx, lock, ttl)
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, s.Delete(ctx, lock))
	n, err := s.Increment(ctx, counter, 2, ttl)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	_, err = s.Arrive(ctx, join, store.Arrival{Source: "a", Taken: true}, ttl)
	require.NoError(t, err)
	joins, err := s.GetJoins(ctx, []string{join})
	require.NoError(t, err)
	assert.Len(t, joins, 1)

	for name, key := range map[string]string{"over the limit": lock + "k", "empty": ""} {
		t.Run(name, func(t *testing.T) {
			calls := map[string]error{
				"SetIfNotExist": second(s.SetIfNotExist(ctx, key, "v", ttl)),
				"Get":           third(s.Get(ctx, key)),
				"ExtendTTL":     second(s.ExtendTTL(ctx, key, ttl)),
				"Delete":        s.Delete(ctx, key),
				"Increment":     second(s.Increment(ctx, key, 1, ttl)),
				"Arrive":        second(s.Arrive(ctx, key, store.Arrival{Source: "a"}, ttl)),
				"GetJoins":      second(s.GetJoins(ctx, []string{join, key})),
			}
			for name, err := range calls {
				assert.ErrorIs(t, err, store.ErrInvalidKey, name)
			}
		})
	}
}

// testLimitGetJoins: GetJoins of more than limits.BatchGetKeys keys is
// served whole.
func testLimitGetJoins(t *testing.T, s store.CoordinationStore) {
	ctx := t.Context()
	for _, n := range []int{limits.BatchGetKeys, limits.BatchGetKeys + 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ks := keys(unique("join"), n)
			for _, k := range ks {
				_, err := s.Arrive(ctx, k, store.Arrival{Source: "a"}, ttl)
				require.NoError(t, err)
			}
			joins, err := s.GetJoins(ctx, ks)
			require.NoError(t, err)
			assert.Len(t, joins, n)
		})
	}
}

// assertLarge asserts that got equals want without printing them, which are
// too large to read.
func assertLarge(t *testing.T, want, got any, msgAndArgs ...any) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		assert.Fail(t, fmt.Sprintf("a value of %d estimated bytes where one of %d was expected",
			limits.ValueSize(got), limits.ValueSize(want)), msgAndArgs...)
	}
}

// second returns the error of a two-result call.
func second[T any](_ T, err error) error { return err }

// third returns the error of a three-result call.
func third[T, U any](_ T, _ U, err error) error { return err }

// SQS is the part of an SQS client that TestSQSLimits calls; *sqs.Client
// and *sqsadaptertest.SQS implement it.
type SQS interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
}

// sqsChars are characters around the edges of the set SQS accepts in a
// message body (limits.MessageChar), by case name.
var sqsChars = []struct {
	name string
	r    rune
}{
	{"U+0000", 0x0}, {"U+0008", 0x8}, {"tab", 0x9}, {"newline", 0xa}, {"U+000B", 0xb}, {"U+000C", 0xc},
	{"carriage return", 0xd}, {"U+000E", 0xe}, {"U+001F", 0x1f}, {"space", 0x20}, {"DEL", 0x7f},
	{"U+D7FF", 0xd7ff}, {"U+E000", 0xe000}, {"U+FFFD", 0xfffd}, {"U+FFFE", 0xfffe}, {"U+FFFF", 0xffff},
	{"U+10000", 0x10000}, {"U+10FFFF", 0x10ffff},
}

// TestSQSLimits runs the limits suite of SQS: the message size, the
// characters of a body, the entries of a batch and their total size, at
// each limit and just over it. newQueue returns a client and the URL of a
// new standard queue whose MaximumMessageSize is limits.MessageBytes. skip
// names the subtests the server gets wrong, each with the reason (a name
// that is no subtest fails the test).
func TestSQSLimits(t *testing.T, newQueue func(t *testing.T) (SQS, string), skip map[string]string) {
	type sqsCase struct {
		name string
		fn   func(t *testing.T, c SQS, url string)
	}
	var cases []sqsCase
	add := func(name string, fn func(t *testing.T, c SQS, url string)) {
		cases = append(cases, sqsCase{name, fn})
	}
	for _, over := range []int{0, 1} {
		add(fmt.Sprintf("body over by %d", over), func(t *testing.T, c SQS, url string) {
			body := strings.Repeat("x", limits.MessageBytes+over)
			_, err := c.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body})
			if over == 1 {
				assert.Equal(t, "InvalidParameterValue", sqsCode(t, err))
				return
			}
			require.NoError(t, err)
			assert.Len(t, receiveBody(t, c, url), len(body))
		})
	}
	add("empty body", func(t *testing.T, c SQS, url string) {
		_, err := c.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: new(string)})
		assert.Equal(t, "MissingParameter", sqsCode(t, err))
	})
	for _, ch := range sqsChars {
		add("character "+ch.name, func(t *testing.T, c SQS, url string) {
			body := "a" + string(ch.r) + "b"
			_, err := c.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body})
			if !limits.MessageChar(ch.r) {
				var imc *sqstypes.InvalidMessageContents
				require.ErrorAs(t, err, &imc)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, body, receiveBody(t, c, url))
		})
	}
	entries := func(n int, size ...int) []sqstypes.SendMessageBatchRequestEntry {
		es := make([]sqstypes.SendMessageBatchRequestEntry, n)
		for i := range es {
			body := "b"
			if i < len(size) {
				body = strings.Repeat("y", size[i])
			}
			es[i] = sqstypes.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("e", i)), MessageBody: aws.String(body)}
		}
		return es
	}
	sendBatch := func(t *testing.T, c SQS, url string, es []sqstypes.SendMessageBatchRequestEntry) (*sqs.SendMessageBatchOutput, error) {
		return c.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: es})
	}
	for _, over := range []int{0, 1} {
		add(fmt.Sprintf("batch entries over by %d", over), func(t *testing.T, c SQS, url string) {
			out, err := sendBatch(t, c, url, entries(limits.BatchEntries+over))
			if over == 1 {
				var tm *sqstypes.TooManyEntriesInBatchRequest
				require.ErrorAs(t, err, &tm)
				return
			}
			require.NoError(t, err)
			assert.Len(t, out.Successful, limits.BatchEntries)
			assert.Empty(t, out.Failed)
		})
		add(fmt.Sprintf("batch bytes over by %d", over), func(t *testing.T, c SQS, url string) {
			half := limits.MessageBytes / 2
			out, err := sendBatch(t, c, url, entries(2, half, half+over))
			if over == 1 {
				var tl *sqstypes.BatchRequestTooLong
				require.ErrorAs(t, err, &tl)
				return
			}
			require.NoError(t, err)
			assert.Len(t, out.Successful, 2)
			assert.Empty(t, out.Failed)
		})
	}
	add("batch entry ids repeated", func(t *testing.T, c SQS, url string) {
		es := entries(2)
		es[1].Id = es[0].Id
		_, err := sendBatch(t, c, url, es)
		var nd *sqstypes.BatchEntryIdsNotDistinct
		require.ErrorAs(t, err, &nd)
	})
	add("batch entry with a refused character", func(t *testing.T, c SQS, url string) {
		es := entries(2)
		es[1].MessageBody = aws.String("a\ufffeb")
		out, err := sendBatch(t, c, url, es)
		require.NoError(t, err)
		require.Len(t, out.Successful, 1)
		assert.Equal(t, "e0", aws.ToString(out.Successful[0].Id))
		require.Len(t, out.Failed, 1)
		assert.Equal(t, "e1", aws.ToString(out.Failed[0].Id))
		assert.Equal(t, "InvalidMessageContents", strings.TrimPrefix(aws.ToString(out.Failed[0].Code), "AWS.SimpleQueueService."))
		assert.True(t, out.Failed[0].SenderFault)
	})

	names := make(map[string]bool, len(cases))
	for _, c := range cases {
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			if reason, ok := skip[c.name]; ok {
				t.Skip(reason)
			}
			client, url := newQueue(t)
			c.fn(t, client, url)
		})
	}
	for name := range skip {
		assert.True(t, names[name], "skip names no subtest: %q", name)
	}
}

// sqsCode returns the code of an SQS API error, without the
// "AWS.SimpleQueueService." prefix of SQS's query-compatible codes.
func sqsCode(t *testing.T, err error) string {
	t.Helper()
	var ae smithy.APIError
	require.ErrorAs(t, err, &ae)
	return strings.TrimPrefix(ae.ErrorCode(), "AWS.SimpleQueueService.")
}

// receiveBody receives the one message of a queue and returns its body.
func receiveBody(t *testing.T, c SQS, url string) string {
	t.Helper()
	out, err := c.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 1})
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	return aws.ToString(out.Messages[0].Body)
}
