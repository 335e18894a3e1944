package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

// TestContextStore runs the conformance suite of store.ContextStore.
// newStore is called once per subtest.
func TestContextStore(t *testing.T, newStore func(t *testing.T) store.ContextStore) {
	run(t, newStore, append([]subtest[store.ContextStore]{
		{name: "CreateRunAndGetRun", fn: testCreateRunAndGetRun},
		{name: "CreateRunExists", fn: testCreateRunExists},
		{name: "CreateRunInvalidInitial", fn: testCreateRunInvalidInitial},
		{name: "CreateRunRace", fn: testCreateRunRace},
		{name: "FinishRun", fn: testFinishRun},
		{name: "FinishRunInvalidStatus", fn: testFinishRunInvalidStatus},
		{name: "FinishRunRace", fn: testFinishRunRace},
		{name: "ValueRoundTrip", fn: testValueRoundTrip},
		{name: "ValuesAreCopies", fn: testValuesAreCopies},
		{name: "UnmarshalableValue", fn: testUnmarshalableValue},
		{name: "SetGetDelete", fn: testSetGetDelete},
		{name: "GetMany", fn: testGetMany},
		{name: "Patch", fn: testPatch},
		{name: "InvalidKeys", fn: testInvalidKeys},
		{name: "LargeValue", fn: testLargeValue},
		{name: "Snapshot", fn: testSnapshot},
		{name: "AcquireNode", fn: testAcquireNode},
		{name: "AcquireNodeExpiredLease", fn: testAcquireNodeExpiredLease},
		{name: "AcquireNodeResolved", fn: testAcquireNodeResolved},
		{name: "AcquireNodeRace", fn: testAcquireNodeRace},
		{name: "ExtendLease", fn: testExtendLease},
		{name: "ReleaseLease", fn: testReleaseLease},
		{name: "CommitNode", fn: testCommitNode},
		{name: "CommitNodeOnce", fn: testCommitNodeOnce},
		{name: "CommitNodeResolved", fn: testCommitNodeResolved},
		{name: "CommitNodeTooLarge", fn: testCommitNodeTooLarge},
		{name: "CommitNodeInvalid", fn: testCommitNodeInvalid},
		{name: "CommitNodeRace", fn: testCommitNodeRace},
		{name: "CommitCloseRace", fn: testCommitCloseRace},
		{name: "FailNode", fn: testFailNode},
		{name: "FailNodeOnce", fn: testFailNodeOnce},
		{name: "FailNodeResolved", fn: testFailNodeResolved},
		{name: "FailedNodeRefused", fn: testFailedNodeRefused},
		{name: "FailCommitRace", fn: testFailCommitRace},
		{name: "CommitNodeIdentical", fn: testCommitNodeIdentical},
		{name: "SkipNodes", fn: testSkipNodes},
		{name: "CloseNodes", fn: testCloseNodes},
		{name: "GetNodes", fn: testGetNodes},
		{name: "ListRunning", fn: testListRunning},
		{name: "ListRunningCursor", fn: testListRunningCursor},
		{name: "ListRunningSpread", fn: testListRunningSpread},
		{name: "ListNodes", fn: testListNodes},
		{name: "ListNodesMany", fn: testListNodesMany},
		{name: "UpdatedAt", fn: testUpdatedAt},
		{name: "ReconcileCanceledContext", fn: testReconcileCanceled},
		{name: "CanceledContext", fn: testContextStoreCanceled},
	}, append(waitingTests(), retentionTests()...)...))
}

// --- runs ---

func testCreateRunAndGetRun(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	created := baseTime()
	initial := map[string]any{"order": map[string]any{"id": "A-1", "qty": 3}, "flag": true}
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{
		RunID:            runID,
		BlueprintID:      "bp",
		BlueprintVersion: "v7",
		CreatedAt:        created,
	}, initial))

	got, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, runID, got.RunID)
	assert.Equal(t, "bp", got.BlueprintID)
	assert.Equal(t, "v7", got.BlueprintVersion)
	assert.Equal(t, store.StatusRunning, got.Status)
	assert.Empty(t, got.Error)
	assert.Empty(t, got.FailedNode)
	assertTime(t, created, got.CreatedAt)
	assert.True(t, got.FinishedAt.IsZero(), "FinishedAt of a running run: %v", got.FinishedAt)
	assert.Nil(t, got.Parent, "a run created without a parent")

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, normalize(t, initial), snap)

	// The record returned is the caller's.
	got.Status = store.StatusFailed
	again, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, store.StatusRunning, again.Status)

	_, err = s.GetRun(ctx, unique("missing"))
	require.ErrorIs(t, err, store.ErrRunNotFound)

	// A child run keeps its parent, and the caller's struct is not shared.
	child := unique("child")
	parent := &store.ParentRef{RunID: runID, NodeID: "sub", BlueprintID: "bp", BlueprintVersion: "v7"}
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: child, BlueprintID: "c", Parent: parent, CreatedAt: created}, nil))
	parent.NodeID = "changed"
	got, err = s.GetRun(ctx, child)
	require.NoError(t, err)
	require.NotNil(t, got.Parent)
	assert.Equal(t, store.ParentRef{RunID: runID, NodeID: "sub", BlueprintID: "bp", BlueprintVersion: "v7"}, *got.Parent)
	got.Parent.NodeID = "mine"
	again, err = s.GetRun(ctx, child)
	require.NoError(t, err)
	assert.Equal(t, "sub", again.Parent.NodeID)
}

func testCreateRunExists(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "first", CreatedAt: baseTime()},
		map[string]any{"a": "first"}))

	err := s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "second", CreatedAt: baseTime()},
		map[string]any{"a": "second", "b": "second"})
	require.ErrorIs(t, err, store.ErrRunExists)

	got, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, "first", got.BlueprintID)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"a": "first"}, snap, "the failed CreateRun wrote nothing")

	// A finished run still exists.
	require.NoError(t, s.FinishRun(ctx, runID, store.StatusCompleted, "", "", baseTime()))
	err = s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "third"}, nil)
	require.ErrorIs(t, err, store.ErrRunExists)
	got, err = s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, store.StatusCompleted, got.Status)
}

func testCreateRunInvalidInitial(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	for _, tc := range []struct {
		name    string
		initial map[string]any
		want    error
	}{
		{"reserved key", map[string]any{"ok": 1, "_outputs.x": 1}, store.ErrInvalidKey},
		{"empty key", map[string]any{"ok": 1, "": 1}, store.ErrInvalidKey},
		{"too large", map[string]any{"ok": 1, "big": strings.Repeat("x", 500*1024)}, store.ErrValueTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runID := unique("run")
			err := s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, tc.initial)
			require.ErrorIs(t, err, tc.want)
			_, err = s.GetRun(ctx, runID)
			require.ErrorIs(t, err, store.ErrRunNotFound, "no run record written")
			snap, err := s.Snapshot(ctx, runID)
			require.NoError(t, err)
			assert.Empty(t, snap, "no initial key written")
		})
	}
}

func testCreateRunRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	errs := race(racers, func(i int) error {
		return s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: fmt.Sprint("bp-", i), CreatedAt: baseTime()},
			map[string]any{"winner": i, fmt.Sprint("k", i): i})
	})
	w := winners(errs)
	require.Len(t, w, 1, "exactly one CreateRun succeeds: %v", errs)
	for i, err := range errs {
		if i != w[0] {
			require.ErrorIs(t, err, store.ErrRunExists)
		}
	}
	got, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprint("bp-", w[0]), got.BlueprintID)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"winner": int64(w[0]), fmt.Sprint("k", w[0]): int64(w[0])}, snap,
		"only the winner's initial keys are written")
}

func testFinishRun(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	for _, tc := range []struct {
		status       store.RunState
		reason, node string
	}{
		{store.StatusCompleted, "", ""},
		{store.StatusFailed, `node "charge" failed after 3 attempt(s): card declined`, "charge"},
		{store.StatusCancelled, "cancelled by operator", ""},
	} {
		t.Run(string(tc.status), func(t *testing.T) {
			runID := unique("run")
			created := baseTime()
			require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", BlueprintVersion: "3", CreatedAt: created}, nil))
			at := created.Add(90 * time.Second)
			require.NoError(t, s.FinishRun(ctx, runID, tc.status, tc.reason, tc.node, at))

			got, err := s.GetRun(ctx, runID)
			require.NoError(t, err)
			assert.Equal(t, tc.status, got.Status)
			assert.Equal(t, tc.reason, got.Error)
			assert.Equal(t, tc.node, got.FailedNode)
			assert.Equal(t, "bp", got.BlueprintID)
			assert.Equal(t, "3", got.BlueprintVersion)
			assertTime(t, created, got.CreatedAt)
			assertTime(t, at, got.FinishedAt)

			// Once: a second transition changes nothing.
			err = s.FinishRun(ctx, runID, store.StatusFailed, "late", "other", at.Add(time.Hour))
			require.ErrorIs(t, err, store.ErrRunFinished)
			again, err := s.GetRun(ctx, runID)
			require.NoError(t, err)
			assert.Equal(t, got, again)
		})
	}
	err := s.FinishRun(ctx, unique("missing"), store.StatusCompleted, "", "", baseTime())
	require.ErrorIs(t, err, store.ErrRunNotFound)
}

func testFinishRunInvalidStatus(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, nil))
	for _, status := range []store.RunState{store.StatusRunning, "", "done"} {
		require.Error(t, s.FinishRun(ctx, runID, status, "", "", baseTime()), "status %q", status)
	}
	got, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, store.StatusRunning, got.Status)
	assert.True(t, got.FinishedAt.IsZero())
}

func testFinishRunRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, nil))
	statuses := []store.RunState{store.StatusCompleted, store.StatusFailed, store.StatusCancelled}
	at := baseTime()
	errs := race(racers, func(i int) error {
		return s.FinishRun(ctx, runID, statuses[i%len(statuses)], fmt.Sprint("reason-", i), fmt.Sprint("node-", i),
			at.Add(time.Duration(i)*time.Second))
	})
	w := winners(errs)
	require.Len(t, w, 1, "exactly one FinishRun succeeds: %v", errs)
	for i, err := range errs {
		if i != w[0] {
			require.ErrorIs(t, err, store.ErrRunFinished)
		}
	}
	got, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, statuses[w[0]%len(statuses)], got.Status)
	assert.Equal(t, fmt.Sprint("reason-", w[0]), got.Error)
	assert.Equal(t, fmt.Sprint("node-", w[0]), got.FailedNode)
	assertTime(t, at.Add(time.Duration(w[0])*time.Second), got.FinishedAt)
}

// --- values ---

type testOrder struct {
	ID       string            `json:"id"`
	Quantity int               `json:"quantity"`
	Price    float64           `json:"price"`
	Tags     []string          `json:"tags"`
	Labels   map[string]string `json:"labels,omitempty"`
	Note     *string           `json:"note"`
	Secret   string            `json:"-"`
	Shipping struct {
		Express bool   `json:"express"`
		Country string `json:"country"`
	} `json:"shipping"`
}

// roundTripValues are JSON-like values, and Go values that normalize to
// JSON-like values, that every store round-trips exactly.
func roundTripValues() []struct {
	name  string
	value any
} {
	order := testOrder{ID: "A-17", Quantity: 3, Price: 12.75, Tags: []string{"gift", "fragile"},
		Labels: map[string]string{"channel": "web"}, Secret: "never stored"}
	order.Shipping.Express = true
	order.Shipping.Country = "NZ"
	return []struct {
		name  string
		value any
	}{
		{"string", "hello"},
		{"unicode string", "héllo wörld, 日本語, emoji 🚀, escapes \" \\ / <b>&amp; \t\n\u0000\u2028"},
		{"empty string", ""},
		{"true", true},
		{"false", false},
		{"null", nil},
		{"zero", int64(0)},
		{"int", 42},
		{"negative int", int64(-7)},
		{"int64 max", int64(math.MaxInt64)},
		{"int64 min", int64(math.MinInt64)},
		{"float", 3.14159},
		{"negative float", -0.5},
		{"tiny float", 2.5e-12},
		{"huge float", 1.5e300},
		{"empty map", map[string]any{}},
		{"empty list", []any{}},
		{"list", []any{int64(1), "two", 3.5, nil, true, []any{}, map[string]any{}}},
		{"nested", map[string]any{
			"a": []any{int64(1), map[string]any{"deep": []any{[]any{"x", int64(math.MaxInt64)}}}},
			"b": map[string]any{"c": map[string]any{"d": nil, "e": false, "f": -1.25}},
			"":  "empty key in a map",
			"ü": "unicode key",
		}},
		{"typed map", map[string]int{"x": 1, "y": -2}},
		{"typed slice", []int64{math.MinInt64, 0, math.MaxInt64}},
		{"struct", order},
		{"struct pointer", &order},
	}
}

func testValueRoundTrip(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	want := map[string]any{}
	for _, tc := range roundTripValues() {
		key := "value/" + tc.name
		require.NoError(t, s.Set(ctx, runID, key, tc.value), tc.name)
		want[key] = normalize(t, tc.value)
		got, ok, err := s.Get(ctx, runID, key)
		require.NoError(t, err, tc.name)
		require.True(t, ok, tc.name)
		assert.Equal(t, want[key], got, tc.name)
	}
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, want, snap)

	// The same values as initial keys, in a node output, staged inputs and
	// node-written keys.
	runID2 := unique("run")
	initial := map[string]any{}
	for _, tc := range roundTripValues() {
		initial["initial/"+tc.name] = tc.value
	}
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID2, BlueprintID: "bp", CreatedAt: baseTime()}, initial))
	snap, err = s.Snapshot(ctx, runID2)
	require.NoError(t, err)
	assert.Equal(t, normalize(t, initial), snap)

	for _, tc := range roundTripValues() {
		nodeID := "node-" + strings.ReplaceAll(tc.name, " ", "-")
		c := store.NodeCommit{
			NodeID: nodeID,
			Output: tc.value,
			Staged: map[string]any{"next": tc.value},
			Sets:   map[string]any{"set/" + tc.name: tc.value},
		}
		rec, err := s.CommitNode(ctx, runID2, c)
		require.NoError(t, err, tc.name)
		assert.Equal(t, normalize(t, tc.value), rec.Output, tc.name)
		assert.Equal(t, normalize(t, c.Staged), rec.Staged, tc.name)

		recs, err := s.GetNodes(ctx, runID2, []string{nodeID})
		require.NoError(t, err)
		require.Contains(t, recs, nodeID)
		assert.Equal(t, normalize(t, tc.value), recs[nodeID].Output, tc.name)
		assert.Equal(t, normalize(t, c.Staged), recs[nodeID].Staged, tc.name)

		got, err := s.GetMany(ctx, runID2, []string{"_outputs." + nodeID, "set/" + tc.name})
		require.NoError(t, err)
		assert.Equal(t, map[string]any{
			"_outputs." + nodeID: normalize(t, tc.value),
			"set/" + tc.name:     normalize(t, tc.value),
		}, got, tc.name)
	}
}

func testValuesAreCopies(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	value := map[string]any{"list": []any{"a", "b"}, "inner": map[string]any{"n": int64(1)}}
	require.NoError(t, s.Set(ctx, runID, "k", value))
	// The caller changes its value after the write.
	value["list"].([]any)[0] = "changed"
	value["inner"].(map[string]any)["n"] = int64(2)
	value["added"] = true

	want := map[string]any{"list": []any{"a", "b"}, "inner": map[string]any{"n": int64(1)}}
	got, ok, err := s.Get(ctx, runID, "k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, want, got)
	// The caller changes what it read.
	got.(map[string]any)["list"].([]any)[1] = "changed"
	got.(map[string]any)["inner"].(map[string]any)["n"] = int64(3)
	again, _, err := s.Get(ctx, runID, "k")
	require.NoError(t, err)
	assert.Equal(t, want, again)

	// Node records too.
	output := map[string]any{"items": []any{int64(1), int64(2)}}
	staged := map[string]any{"next": map[string]any{"x": "y"}}
	taken := []string{"next"}
	rec, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: output, Taken: taken, Staged: staged})
	require.NoError(t, err)
	output["items"].([]any)[0] = int64(99)
	staged["next"].(map[string]any)["x"] = "changed"
	taken[0] = "changed"
	rec.Output.(map[string]any)["items"].([]any)[1] = int64(99)
	rec.Taken[0] = "changed"
	rec.Staged["next"].(map[string]any)["x"] = "changed"

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assert.Equal(t, map[string]any{"items": []any{int64(1), int64(2)}}, recs["n"].Output)
	assert.Equal(t, []string{"next"}, recs["n"].Taken)
	assert.Equal(t, map[string]any{"next": map[string]any{"x": "y"}}, recs["n"].Staged)
}

func testUnmarshalableValue(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	for _, tc := range []struct {
		name  string
		value any
	}{
		{"channel", make(chan int)},
		{"function", func() {}},
		{"NaN", math.NaN()},
		{"nested infinity", map[string]any{"x": []any{math.Inf(1)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Set(ctx, runID, "k", tc.value)
			require.Error(t, err)
			assert.NotErrorIs(t, err, store.ErrValueTooLarge)
			err = s.Patch(ctx, runID, map[string]any{"ok": 1, "k": tc.value}, nil)
			require.Error(t, err)
			_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: tc.value})
			require.Error(t, err)
			_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "ok", Sets: map[string]any{"k": tc.value}})
			require.Error(t, err)
			err = s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, map[string]any{"k": tc.value})
			require.Error(t, err)

			snap, err := s.Snapshot(ctx, runID)
			require.NoError(t, err)
			assert.Empty(t, snap, "nothing written")
			recs, err := s.GetNodes(ctx, runID, []string{"n"})
			require.NoError(t, err)
			assert.Empty(t, recs, "no node record written")
			_, err = s.GetRun(ctx, runID)
			require.ErrorIs(t, err, store.ErrRunNotFound)
		})
	}
}

func testSetGetDelete(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID, other := unique("run"), unique("run")

	_, ok, err := s.Get(ctx, runID, "k")
	require.NoError(t, err)
	assert.False(t, ok, "absent key")

	require.NoError(t, s.Set(ctx, runID, "k", "v1"))
	require.NoError(t, s.Set(ctx, runID, "k", "v2"))
	got, ok, err := s.Get(ctx, runID, "k")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "v2", got, "last write wins")

	// A null value is present.
	require.NoError(t, s.Set(ctx, runID, "null", nil))
	got, ok, err = s.Get(ctx, runID, "null")
	require.NoError(t, err)
	assert.True(t, ok, "a null value is present")
	assert.Nil(t, got)

	// Keys may hold any character but the reserved prefix.
	for _, key := range []string{"clé/日本 🚀", "a.b.c", "_outputs", "x_outputs.y", " ", strings.Repeat("k", 512)} {
		require.NoError(t, s.Set(ctx, runID, key, key), key)
		got, ok, err := s.Get(ctx, runID, key)
		require.NoError(t, err, key)
		require.True(t, ok, key)
		assert.Equal(t, key, got)
	}

	// Runs are separate.
	_, ok, err = s.Get(ctx, other, "k")
	require.NoError(t, err)
	assert.False(t, ok, "a key of another run")
	existed, err := s.Delete(ctx, other, "k")
	require.NoError(t, err)
	assert.False(t, existed)

	existed, err = s.Delete(ctx, runID, "k")
	require.NoError(t, err)
	assert.True(t, existed)
	_, ok, err = s.Get(ctx, runID, "k")
	require.NoError(t, err)
	assert.False(t, ok, "deleted")
	existed, err = s.Delete(ctx, runID, "k")
	require.NoError(t, err)
	assert.False(t, existed, "second delete")
	existed, err = s.Delete(ctx, runID, "null")
	require.NoError(t, err)
	assert.True(t, existed, "a null value existed")
}

func testGetMany(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.Patch(ctx, runID, map[string]any{"a": int64(1), "b": "two", "n": nil}, nil))
	_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "done", Output: map[string]any{"ok": true}})
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "running", "w1", baseTime().Add(time.Minute), baseTime())
	require.NoError(t, err)

	got, err := s.GetMany(ctx, runID, []string{"a", "b", "n", "missing", "_outputs.done", "_outputs.running", "_outputs.absent", "a"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"a":             int64(1),
		"b":             "two",
		"n":             nil,
		"_outputs.done": map[string]any{"ok": true},
	}, got)

	got, err = s.GetMany(ctx, runID, nil)
	require.NoError(t, err)
	assert.Empty(t, got)
	got, err = s.GetMany(ctx, unique("run"), []string{"a", "_outputs.done"})
	require.NoError(t, err)
	assert.Empty(t, got)
}

func testPatch(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.Patch(ctx, runID, map[string]any{"a": 1, "b": 2, "c": 3}, nil))
	require.NoError(t, s.Patch(ctx, runID, map[string]any{"b": "two", "d": []any{"x"}}, []string{"a", "missing"}))
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"b": "two", "c": int64(3), "d": []any{"x"}}, snap)

	require.NoError(t, s.Patch(ctx, runID, nil, nil), "an empty patch")
	require.NoError(t, s.Patch(ctx, runID, nil, []string{"b", "c", "d"}))
	snap, err = s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Empty(t, snap)

	// Atomic: one bad entry and nothing is written.
	require.NoError(t, s.Set(ctx, runID, "keep", "kept"))
	for _, tc := range []struct {
		name    string
		sets    map[string]any
		deletes []string
		want    error
	}{
		{"too large", map[string]any{"x": 1, "big": strings.Repeat("x", 500*1024)}, []string{"keep"}, store.ErrValueTooLarge},
		{"reserved set", map[string]any{"x": 1, "_outputs.n": 1}, []string{"keep"}, store.ErrInvalidKey},
		{"reserved delete", map[string]any{"x": 1}, []string{"keep", "_outputs.n"}, store.ErrInvalidKey},
		{"empty delete", map[string]any{"x": 1}, []string{"keep", ""}, store.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, s.Patch(ctx, runID, tc.sets, tc.deletes), tc.want)
			snap, err := s.Snapshot(ctx, runID)
			require.NoError(t, err)
			assert.Equal(t, map[string]any{"keep": "kept"}, snap, "nothing written")
		})
	}
}

func testInvalidKeys(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "out"})
	require.NoError(t, err)

	for _, key := range []string{"", "_outputs.n", "_outputs.other", "_outputs.", strings.Repeat("k", 2048)} {
		name := key
		if len(name) > 20 {
			name = "too long"
		}
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			require.ErrorIs(t, s.Set(ctx, runID, key, "x"), store.ErrInvalidKey)
			_, err := s.Delete(ctx, runID, key)
			require.ErrorIs(t, err, store.ErrInvalidKey)
			require.ErrorIs(t, s.Patch(ctx, runID, map[string]any{key: "x"}, nil), store.ErrInvalidKey)
			require.ErrorIs(t, s.Patch(ctx, runID, nil, []string{key}), store.ErrInvalidKey)
		})
	}
	_, _, err = s.Get(ctx, runID, "")
	require.ErrorIs(t, err, store.ErrInvalidKey, "Get of the empty key")

	// The node's output is intact.
	got, ok, err := s.Get(ctx, runID, "_outputs.n")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "out", got)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"_outputs.n": "out"}, snap)
}

func testLargeValue(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")

	// About 300 KB fits in one item.
	list := make([]any, 0, 3000)
	for i := range 3000 {
		list = append(list, fmt.Sprintf("%04d-%s", i, strings.Repeat("y", 95)))
	}
	for key, v := range map[string]any{"big-string": strings.Repeat("x", 300*1024), "big-list": list} {
		require.NoError(t, s.Set(ctx, runID, key, v), key)
		got, ok, err := s.Get(ctx, runID, key)
		require.NoError(t, err)
		require.True(t, ok)
		assert.Equal(t, normalize(t, v), got)
	}

	// About 500 KB does not, and nothing is written.
	require.NoError(t, s.Set(ctx, runID, "k", "small"))
	err := s.Set(ctx, runID, "k", strings.Repeat("x", 500*1024))
	require.ErrorIs(t, err, store.ErrValueTooLarge)
	var tooLarge *store.ValueTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, runID, tooLarge.RunID)
	assert.Equal(t, "k", tooLarge.Key)
	assert.Positive(t, tooLarge.Limit)
	assert.Greater(t, tooLarge.Size, tooLarge.Limit)
	assert.GreaterOrEqual(t, tooLarge.Size, 500*1024)
	assert.Contains(t, err.Error(), runID)

	got, ok, err := s.Get(ctx, runID, "k")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "small", got, "the failed write changed nothing")

	err = s.Set(ctx, runID, "new", map[string]any{"blob": strings.Repeat("z", 500*1024)})
	require.ErrorIs(t, err, store.ErrValueTooLarge)
	_, ok, err = s.Get(ctx, runID, "new")
	require.NoError(t, err)
	assert.False(t, ok, "the failed write created nothing")
}

func testSnapshot(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now},
		map[string]any{"input": map[string]any{"n": 5}, "gone": true}))
	_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "a", Output: int64(10), Sets: map[string]any{"fromA": "x"}, Deletes: []string{"gone"}})
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "nil", Output: nil})
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "pending", "w", now.Add(time.Minute), now)
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))
	_, err = s.AcquireNode(ctx, runID, "released", "w", now.Add(time.Minute), now)
	require.NoError(t, err)
	require.NoError(t, s.ReleaseLease(ctx, runID, "released", "w"))

	// Another run's keys stay out.
	other := unique("run")
	require.NoError(t, s.Set(ctx, other, "input", "other"))
	_, err = s.CommitNode(ctx, other, store.NodeCommit{NodeID: "b", Output: "other"})
	require.NoError(t, err)

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"input":        map[string]any{"n": int64(5)},
		"fromA":        "x",
		"_outputs.a":   int64(10),
		"_outputs.nil": nil,
	}, snap)

	// Many keys: a store that pages its reads returns them all.
	many := map[string]any{}
	for i := range 40 {
		many[fmt.Sprintf("key-%02d", i)] = strings.Repeat("v", 30*1024)
	}
	bulk := unique("run")
	keys := slices.Sorted(maps.Keys(many))
	for chunk := range slices.Chunk(keys, 10) {
		part := map[string]any{}
		for _, k := range chunk {
			part[k] = many[k]
		}
		require.NoError(t, s.Patch(ctx, bulk, part, nil))
	}
	snap, err = s.Snapshot(ctx, bulk)
	require.NoError(t, err)
	assert.Equal(t, many, snap, "a 1.2 MB context")

	snap, err = s.Snapshot(ctx, unique("run"))
	require.NoError(t, err)
	assert.Empty(t, snap, "an unknown run has an empty context")

	// A store that reads the context and the node records in one call
	// returns what Snapshot and ListNodes return.
	both, ok := s.(snapshotNodes)
	if !ok {
		return
	}
	for _, id := range []string{runID, bulk, unique("run")} {
		vals, recs, err := both.SnapshotNodes(ctx, id)
		require.NoError(t, err)
		snap, err := s.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, snap, vals, "SnapshotNodes: the context")
		nodes, err := reconcilerOf(t, s).ListNodes(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, nodes, recs, "SnapshotNodes: the node records")
	}
}

// snapshotNodes is a store that reads a run's context and node records in
// one call (optional).
type snapshotNodes interface {
	SnapshotNodes(ctx context.Context, runID string) (map[string]any, map[string]*store.NodeRecord, error)
}

// --- node records ---

func testAcquireNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()

	rec, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	assert.Equal(t, "n", rec.NodeID)
	assert.Equal(t, store.NodePending, rec.State)
	assert.Equal(t, 1, rec.Attempts)
	assert.Equal(t, "w1", rec.LeaseOwner)
	assertTime(t, now.Add(time.Minute), rec.LeaseUntil)

	// The holder acquires again: another attempt, a new expiry.
	rec, err = s.AcquireNode(ctx, runID, "n", "w1", now.Add(2*time.Minute), now.Add(time.Second))
	require.NoError(t, err)
	assert.Equal(t, 2, rec.Attempts)
	assert.Equal(t, "w1", rec.LeaseOwner)
	assertTime(t, now.Add(2*time.Minute), rec.LeaseUntil)

	// Another owner while the lease runs.
	rec, err = s.AcquireNode(ctx, runID, "n", "w2", now.Add(5*time.Minute), now.Add(time.Minute))
	require.ErrorIs(t, err, store.ErrLeaseHeld)
	var held *store.LeaseHeldError
	require.ErrorAs(t, err, &held)
	assert.Equal(t, runID, held.RunID)
	assert.Equal(t, "n", held.NodeID)
	assert.Equal(t, "w1", held.Owner)
	assertTime(t, now.Add(2*time.Minute), held.Until)
	require.NotNil(t, rec, "the current record comes with the error")
	assert.Equal(t, store.NodePending, rec.State)
	assert.Equal(t, 2, rec.Attempts, "a refused acquisition is no attempt")
	assert.Equal(t, "w1", rec.LeaseOwner)

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assert.Equal(t, 2, recs["n"].Attempts)
	assert.Equal(t, "w1", recs["n"].LeaseOwner)
	assertTime(t, now.Add(2*time.Minute), recs["n"].LeaseUntil)
	assert.Nil(t, recs["n"].Output)

	// Nodes are separate, and so are runs.
	rec, err = s.AcquireNode(ctx, runID, "m", "w2", now.Add(time.Minute), now)
	require.NoError(t, err)
	assert.Equal(t, 1, rec.Attempts)
	rec, err = s.AcquireNode(ctx, unique("run"), "n", "w2", now.Add(time.Minute), now)
	require.NoError(t, err)
	assert.Equal(t, 1, rec.Attempts)
}

func testAcquireNodeExpiredLease(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	until := now.Add(30 * time.Second)

	_, err := s.AcquireNode(ctx, runID, "n", "w1", until, now)
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "n", "w2", until.Add(time.Minute), until.Add(-time.Millisecond))
	require.ErrorIs(t, err, store.ErrLeaseHeld, "just before the expiry")

	// Expired at now: taken over, and the attempts keep counting.
	rec, err := s.AcquireNode(ctx, runID, "n", "w2", until.Add(time.Minute), until)
	require.NoError(t, err, "a lease is expired at its LeaseUntil")
	assert.Equal(t, 2, rec.Attempts)
	assert.Equal(t, "w2", rec.LeaseOwner)

	rec, err = s.AcquireNode(ctx, runID, "n", "w3", until.Add(3*time.Minute), until.Add(2*time.Minute))
	require.NoError(t, err)
	assert.Equal(t, 3, rec.Attempts)
	assert.Equal(t, "w3", rec.LeaseOwner)
	assertTime(t, until.Add(3*time.Minute), rec.LeaseUntil)

	// The first owner, back from a pause, has lost it.
	_, err = s.AcquireNode(ctx, runID, "n", "w1", until.Add(3*time.Minute), until.Add(2*time.Minute))
	require.ErrorIs(t, err, store.ErrLeaseHeld)
	require.ErrorIs(t, s.ExtendLease(ctx, runID, "n", "w1", until.Add(time.Hour)), store.ErrLeaseLost)
}

func testAcquireNodeResolved(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "committed", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "committed", Output: "out", Action: "go", Taken: []string{"x"}})
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))

	rec, err := s.AcquireNode(ctx, runID, "committed", "w1", now.Add(2*time.Minute), now.Add(time.Minute))
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	require.NotNil(t, rec)
	assert.Equal(t, store.NodeCommitted, rec.State)
	assert.Equal(t, "out", rec.Output)
	assert.Equal(t, "go", rec.Action)
	assert.Equal(t, []string{"x"}, rec.Taken)
	assert.Equal(t, 1, rec.Attempts)

	rec, err = s.AcquireNode(ctx, runID, "skipped", "w1", now.Add(time.Minute), now)
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	require.NotNil(t, rec)
	assert.Equal(t, store.NodeSkipped, rec.State)

	rec, err = s.AcquireNode(ctx, runID, "closed", "w1", now.Add(time.Minute), now)
	require.ErrorIs(t, err, store.ErrNodeClosed)
	require.NotNil(t, rec)
	assert.Equal(t, store.NodeClosed, rec.State)

	recs, err := s.GetNodes(ctx, runID, []string{"committed", "skipped", "closed"})
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.Equal(t, 1, recs["committed"].Attempts, "no attempt counted on a committed node")
	assert.Equal(t, 0, recs["skipped"].Attempts)
	assert.Equal(t, 0, recs["closed"].Attempts)
	assert.Empty(t, recs["skipped"].LeaseOwner)
	assert.Empty(t, recs["closed"].LeaseOwner)
}

func testAcquireNodeRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	until := now.Add(time.Minute)
	recs := make([]*store.NodeRecord, racers)
	errs := race(racers, func(i int) error {
		var err error
		recs[i], err = s.AcquireNode(ctx, runID, "n", fmt.Sprint("owner-", i), until, now)
		return err
	})
	w := winners(errs)
	require.Len(t, w, 1, "exactly one owner takes the lease: %v", errs)
	owner := fmt.Sprint("owner-", w[0])
	assert.Equal(t, owner, recs[w[0]].LeaseOwner)
	assert.Equal(t, 1, recs[w[0]].Attempts)
	for i, err := range errs {
		if i == w[0] {
			continue
		}
		var held *store.LeaseHeldError
		require.ErrorAs(t, err, &held)
		assert.Equal(t, owner, held.Owner)
		assertTime(t, until, held.Until)
	}
	got, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, got, "n")
	assert.Equal(t, owner, got["n"].LeaseOwner)
	assert.Equal(t, 1, got["n"].Attempts, "refused acquisitions are no attempts")
}

func testExtendLease(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)

	require.NoError(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(10*time.Minute)))
	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assertTime(t, now.Add(10*time.Minute), recs["n"].LeaseUntil)
	assert.Equal(t, "w1", recs["n"].LeaseOwner)
	assert.Equal(t, 1, recs["n"].Attempts, "extending is no attempt")

	// The extension holds off other owners.
	_, err = s.AcquireNode(ctx, runID, "n", "w2", now.Add(20*time.Minute), now.Add(5*time.Minute))
	require.ErrorIs(t, err, store.ErrLeaseHeld)

	require.ErrorIs(t, s.ExtendLease(ctx, runID, "n", "w2", now.Add(time.Hour)), store.ErrLeaseLost, "not the owner")
	require.ErrorIs(t, s.ExtendLease(ctx, runID, "absent", "w1", now.Add(time.Hour)), store.ErrLeaseLost, "absent node")
	recs, err = s.GetNodes(ctx, runID, []string{"absent"})
	require.NoError(t, err)
	assert.Empty(t, recs, "a refused extension creates nothing")

	// Not after the commit.
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: 1})
	require.NoError(t, err)
	require.ErrorIs(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(time.Hour)), store.ErrLeaseLost, "committed node")

	// Not after a release, a skip or a close.
	for _, end := range []string{"release", "skip", "close"} {
		node := "node-" + end
		_, err := s.AcquireNode(ctx, runID, node, "w1", now.Add(time.Minute), now)
		require.NoError(t, err)
		switch end {
		case "release":
			require.NoError(t, s.ReleaseLease(ctx, runID, node, "w1"))
		case "skip":
			require.NoError(t, s.SkipNodes(ctx, runID, []string{node}))
		case "close":
			require.NoError(t, s.CloseNodes(ctx, runID, []string{node}))
		}
		require.ErrorIs(t, s.ExtendLease(ctx, runID, node, "w1", now.Add(time.Hour)), store.ErrLeaseLost, end)
	}
}

func testReleaseLease(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)

	// Not held: no error, no change.
	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w2"))
	_, err = s.AcquireNode(ctx, runID, "n", "w2", now.Add(time.Hour), now)
	require.ErrorIs(t, err, store.ErrLeaseHeld, "w2 could not release w1's lease")

	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w1"))
	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assert.Equal(t, store.NodePending, recs["n"].State)
	assert.Empty(t, recs["n"].LeaseOwner)
	assert.Equal(t, 1, recs["n"].Attempts, "the attempt count is kept")
	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w1"), "released twice")

	// Free at once, for anyone.
	rec, err := s.AcquireNode(ctx, runID, "n", "w2", now.Add(time.Hour), now.Add(time.Second))
	require.NoError(t, err)
	assert.Equal(t, 2, rec.Attempts)
	assert.Equal(t, "w2", rec.LeaseOwner)

	// Absent and committed nodes.
	require.NoError(t, s.ReleaseLease(ctx, runID, "absent", "w1"))
	recs, err = s.GetNodes(ctx, runID, []string{"absent"})
	require.NoError(t, err)
	assert.Empty(t, recs, "releasing creates nothing")
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "done"})
	require.NoError(t, err)
	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w2"))
	recs, err = s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assert.Equal(t, store.NodeCommitted, recs["n"].State)
	assert.Equal(t, "done", recs["n"].Output)
}

func testCommitNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.Patch(ctx, runID, map[string]any{"old": "x", "overwritten": 1, "untouched": true}, nil))
	_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)

	c := store.NodeCommit{
		NodeID:   "n",
		Output:   map[string]any{"total": 12.5, "items": []any{"a", "b"}},
		Action:   "approved",
		Taken:    []string{"ship", "notify"},
		Staged:   map[string]any{"ship": map[string]any{"address": "x"}, "notify": nil},
		Fallback: "n-fallback",
		Sets:     map[string]any{"overwritten": "new", "added": []any{int64(1)}},
		Deletes:  []string{"old", "never-existed"},
	}
	rec, err := s.CommitNode(ctx, runID, c)
	require.NoError(t, err)
	want := &store.NodeRecord{
		NodeID:   "n",
		State:    store.NodeCommitted,
		Attempts: 2,
		Output:   normalize(t, c.Output),
		Action:   "approved",
		Taken:    []string{"ship", "notify"},
		Staged:   normalize(t, c.Staged).(map[string]any),
		Fallback: "n-fallback",
	}
	assertNodeRecord(t, want, rec)

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assertNodeRecord(t, want, recs["n"])

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"overwritten": "new",
		"added":       []any{int64(1)},
		"untouched":   true,
		"_outputs.n":  normalize(t, c.Output),
	}, snap)

	// No lease needed: the first commit wins, even over another's lease.
	_, err = s.AcquireNode(ctx, runID, "leased", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)
	rec, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "leased", Output: "by w2"})
	require.NoError(t, err)
	assert.Equal(t, store.NodeCommitted, rec.State)
	assert.Equal(t, 1, rec.Attempts)
	assert.Empty(t, rec.LeaseOwner, "the commit ends the lease")

	rec, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "never-acquired"})
	require.NoError(t, err)
	assert.Equal(t, store.NodeCommitted, rec.State)
	assert.Equal(t, 0, rec.Attempts)
	assert.Nil(t, rec.Output)
	assert.Empty(t, rec.Taken)
	assert.Empty(t, rec.Staged)
	got, ok, err := s.Get(ctx, runID, "_outputs.never-acquired")
	require.NoError(t, err)
	assert.True(t, ok, "a committed nil output is present")
	assert.Nil(t, got)
}

func assertNodeRecord(t *testing.T, want, got *store.NodeRecord) {
	t.Helper()
	require.NotNil(t, got)
	assert.Equal(t, want.NodeID, got.NodeID)
	assert.Equal(t, want.State, got.State)
	assert.Equal(t, want.Attempts, got.Attempts)
	assert.Equal(t, want.LeaseOwner, got.LeaseOwner)
	assertTime(t, want.LeaseUntil, got.LeaseUntil)
	assert.Equal(t, want.Output, got.Output)
	assert.Equal(t, want.Action, got.Action)
	if len(want.Taken) == 0 {
		assert.Empty(t, got.Taken)
	} else {
		assert.Equal(t, want.Taken, got.Taken)
	}
	if len(want.Staged) == 0 {
		assert.Empty(t, got.Staged)
	} else {
		assert.Equal(t, want.Staged, got.Staged)
	}
	assert.Equal(t, want.Fallback, got.Fallback)
}

func testCommitNodeOnce(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	first, err := s.CommitNode(ctx, runID, store.NodeCommit{
		NodeID: "n", Output: "first", Action: "a1", Taken: []string{"x"}, Staged: map[string]any{"x": 1},
		Sets: map[string]any{"k": "first"},
	})
	require.NoError(t, err)

	rec, err := s.CommitNode(ctx, runID, store.NodeCommit{
		NodeID: "n", Output: "second", Action: "a2", Taken: []string{"y"}, Fallback: "fb",
		Sets: map[string]any{"k2": "second"}, Deletes: []string{"k"},
	})
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	assertNodeRecord(t, first, rec)

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "first", "_outputs.n": "first"}, snap, "the second commit wrote nothing")
	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertNodeRecord(t, first, recs["n"])
}

func testCommitNodeResolved(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.Set(ctx, runID, "k", "before"))
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))
	_, err := s.AcquireNode(ctx, runID, "closed-while-running", "w1", baseTime().Add(time.Minute), baseTime())
	require.NoError(t, err)
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed-while-running"}))

	commit := func(node string) (*store.NodeRecord, error) {
		return s.CommitNode(ctx, runID, store.NodeCommit{NodeID: node, Output: "late",
			Sets: map[string]any{"k2": "after"}, Deletes: []string{"k"}})
	}
	rec, err := commit("skipped")
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	require.NotNil(t, rec)
	assert.Equal(t, store.NodeSkipped, rec.State)
	_, err = commit("closed")
	require.ErrorIs(t, err, store.ErrNodeClosed)
	_, err = commit("closed-while-running")
	require.ErrorIs(t, err, store.ErrNodeClosed)

	recs, err := s.GetNodes(ctx, runID, []string{"skipped", "closed", "closed-while-running"})
	require.NoError(t, err)
	assert.Equal(t, store.NodeSkipped, recs["skipped"].State)
	assert.Equal(t, store.NodeClosed, recs["closed"].State)
	assert.Equal(t, store.NodeClosed, recs["closed-while-running"].State)
	assert.Nil(t, recs["closed"].Output)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "before"}, snap, "refused commits wrote nothing")
}

func testCommitNodeTooLarge(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.Set(ctx, runID, "k", "before"))
	big := strings.Repeat("x", 500*1024)

	for _, tc := range []struct {
		name string
		c    store.NodeCommit
		key  string
	}{
		{"output", store.NodeCommit{NodeID: "n", Output: big, Sets: map[string]any{"k": "after"}}, "_outputs.n"},
		{"output object", store.NodeCommit{NodeID: "n", Output: map[string]any{"blob": big}}, "_outputs.n"},
		{"staged", store.NodeCommit{NodeID: "n", Output: "small", Taken: []string{"next"}, Staged: map[string]any{"next": big}}, "_outputs.n"},
		{"set", store.NodeCommit{NodeID: "n", Output: "small", Sets: map[string]any{"k": "after", "big": big}}, "big"},
		{"set over a key", store.NodeCommit{NodeID: "n", Output: "small", Sets: map[string]any{"k": big}}, "k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CommitNode(ctx, runID, tc.c)
			require.ErrorIs(t, err, store.ErrValueTooLarge)
			var tooLarge *store.ValueTooLargeError
			require.ErrorAs(t, err, &tooLarge)
			assert.Equal(t, runID, tooLarge.RunID)
			assert.Equal(t, tc.key, tooLarge.Key)
			assert.Greater(t, tooLarge.Size, tooLarge.Limit)

			recs, err := s.GetNodes(ctx, runID, []string{"n"})
			require.NoError(t, err)
			if rec, ok := recs["n"]; ok {
				assert.NotEqual(t, store.NodeCommitted, rec.State, "not committed")
			}
			snap, err := s.Snapshot(ctx, runID)
			require.NoError(t, err)
			assert.Equal(t, map[string]any{"k": "before"}, snap, "nothing written")
		})
	}

	// The node can still commit a smaller output.
	rec, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: strings.Repeat("x", 300*1024)})
	require.NoError(t, err)
	assert.Equal(t, store.NodeCommitted, rec.State)
	got, ok, err := s.Get(ctx, runID, "_outputs.n")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Len(t, got, 300*1024)
}

func testCommitNodeInvalid(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	require.NoError(t, s.Set(ctx, runID, "k", "before"))
	for _, tc := range []struct {
		name string
		c    store.NodeCommit
	}{
		{"reserved set", store.NodeCommit{NodeID: "n", Output: 1, Sets: map[string]any{"k": "after", "_outputs.m": 2}}},
		{"reserved delete", store.NodeCommit{NodeID: "n", Output: 1, Sets: map[string]any{"k": "after"}, Deletes: []string{"_outputs.m"}}},
		{"empty set", store.NodeCommit{NodeID: "n", Output: 1, Sets: map[string]any{"k": "after", "": 2}}},
		{"empty delete", store.NodeCommit{NodeID: "n", Output: 1, Deletes: []string{"k", ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.CommitNode(ctx, runID, tc.c)
			require.ErrorIs(t, err, store.ErrInvalidKey)
			recs, err := s.GetNodes(ctx, runID, []string{"n", "m"})
			require.NoError(t, err)
			assert.Empty(t, recs, "no node record written")
			snap, err := s.Snapshot(ctx, runID)
			require.NoError(t, err)
			assert.Equal(t, map[string]any{"k": "before"}, snap, "nothing written")
		})
	}
	_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "", Output: 1})
	require.Error(t, err, "empty node id")
}

func testCommitNodeRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.Set(ctx, runID, "doomed", true))
	recs := make([]*store.NodeRecord, racers)
	errs := race(racers, func(i int) error {
		// Every racer has started an attempt, as duplicate deliveries do.
		if _, err := s.AcquireNode(ctx, runID, "n", fmt.Sprint("w", i), now.Add(time.Minute), now.Add(time.Duration(i)*time.Hour)); err != nil &&
			!errors.Is(err, store.ErrLeaseHeld) && !errors.Is(err, store.ErrNodeCommitted) {
			return err
		}
		var err error
		recs[i], err = s.CommitNode(ctx, runID, store.NodeCommit{
			NodeID:  "n",
			Output:  map[string]any{"by": int64(i)},
			Action:  fmt.Sprint("action-", i),
			Taken:   []string{fmt.Sprint("target-", i)},
			Sets:    map[string]any{"winner": int64(i), fmt.Sprint("by-", i): true},
			Deletes: []string{"doomed"},
		})
		return err
	})
	w := winners(errs)
	require.Len(t, w, 1, "exactly one commit succeeds: %v", errs)
	win := recs[w[0]]
	assert.Equal(t, map[string]any{"by": int64(w[0])}, win.Output)
	for i, err := range errs {
		if i == w[0] {
			continue
		}
		require.ErrorIs(t, err, store.ErrNodeCommitted)
		require.NotNil(t, recs[i])
		assert.Equal(t, win.Output, recs[i].Output, "a loser sees the winner's record")
		assert.Equal(t, win.Action, recs[i].Action)
		assert.Equal(t, win.Taken, recs[i].Taken)
	}
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"winner":                int64(w[0]),
		fmt.Sprint("by-", w[0]): true,
		"_outputs.n":            map[string]any{"by": int64(w[0])},
	}, snap, "only the winner's writes are applied")
}

// testCommitCloseRace races the commit of nodes with the close of their run:
// each node ends either committed (with its writes) or closed (without).
func testCommitCloseRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	const nodes = racers / 2
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprint("n", i)
	}
	errs := race(racers, func(i int) error {
		if i%2 == 0 {
			_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: ids[i/2], Output: int64(i), Sets: map[string]any{ids[i/2]: true}})
			return err
		}
		return s.CloseNodes(ctx, runID, []string{ids[i/2]})
	})
	recs, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	for n, id := range ids {
		require.NoError(t, errs[2*n+1], "CloseNodes")
		require.Contains(t, recs, id)
		if errs[2*n] == nil {
			assert.Equal(t, store.NodeCommitted, recs[id].State, id)
			assert.Equal(t, true, snap[id], id)
			assert.Equal(t, int64(2*n), snap["_outputs."+id], id)
		} else {
			require.ErrorIs(t, errs[2*n], store.ErrNodeClosed, id)
			assert.Equal(t, store.NodeClosed, recs[id].State, id)
			assert.NotContains(t, snap, id)
			assert.NotContains(t, snap, "_outputs."+id)
		}
	}
}

func testSkipNodes(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "pending", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "committed", Output: "out"})
	require.NoError(t, err)
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))

	ids := []string{"absent", "pending", "committed", "closed"}
	require.NoError(t, s.SkipNodes(ctx, runID, ids))
	require.NoError(t, s.SkipNodes(ctx, runID, ids), "idempotent")
	require.NoError(t, s.SkipNodes(ctx, runID, nil))

	recs, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	assert.Equal(t, store.NodeSkipped, recs["absent"].State)
	assert.Equal(t, store.NodeSkipped, recs["pending"].State)
	assert.Equal(t, 1, recs["pending"].Attempts)
	assert.Equal(t, store.NodeCommitted, recs["committed"].State)
	assert.Equal(t, "out", recs["committed"].Output)
	assert.Equal(t, store.NodeClosed, recs["closed"].State)

	_, ok, err := s.Get(ctx, runID, "_outputs.absent")
	require.NoError(t, err)
	assert.False(t, ok, "a skipped node has no output")
	_, err = s.AcquireNode(ctx, runID, "absent", "w1", now.Add(time.Minute), now)
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	require.ErrorIs(t, s.ExtendLease(ctx, runID, "pending", "w1", now.Add(time.Hour)), store.ErrLeaseLost)
}

func testCloseNodes(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "pending", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "committed", Output: "out"})
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))

	ids := []string{"absent", "pending", "committed", "skipped"}
	require.NoError(t, s.CloseNodes(ctx, runID, ids))
	require.NoError(t, s.CloseNodes(ctx, runID, ids), "idempotent")
	require.NoError(t, s.CloseNodes(ctx, runID, nil))

	recs, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	require.Len(t, recs, 4)
	assert.Equal(t, store.NodeClosed, recs["absent"].State)
	assert.Equal(t, store.NodeClosed, recs["pending"].State)
	assert.Equal(t, 1, recs["pending"].Attempts)
	assert.Equal(t, store.NodeCommitted, recs["committed"].State)
	assert.Equal(t, "out", recs["committed"].Output)
	assert.Equal(t, store.NodeSkipped, recs["skipped"].State)

	_, err = s.AcquireNode(ctx, runID, "absent", "w1", now.Add(time.Minute), now)
	require.ErrorIs(t, err, store.ErrNodeClosed)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"absent"}))
	recs, err = s.GetNodes(ctx, runID, []string{"absent"})
	require.NoError(t, err)
	assert.Equal(t, store.NodeClosed, recs["absent"].State, "skipping leaves a closed node closed")
}

func testGetNodes(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "a", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "b", Output: "out"})
	require.NoError(t, err)

	recs, err := s.GetNodes(ctx, runID, []string{"a", "b", "absent", "a"})
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, "a", recs["a"].NodeID)
	assert.Equal(t, store.NodePending, recs["a"].State)
	assert.Equal(t, "b", recs["b"].NodeID)
	assert.Equal(t, store.NodeCommitted, recs["b"].State)

	recs, err = s.GetNodes(ctx, runID, nil)
	require.NoError(t, err)
	assert.Empty(t, recs)
	recs, err = s.GetNodes(ctx, unique("run"), []string{"a", "b"})
	require.NoError(t, err)
	assert.Empty(t, recs)

	// Context keys are not node records.
	require.NoError(t, s.Set(ctx, runID, "c", "value"))
	recs, err = s.GetNodes(ctx, runID, []string{"c"})
	require.NoError(t, err)
	assert.Empty(t, recs)
}

func testContextStoreCanceled(t *testing.T, s store.ContextStore) {
	live := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(live, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, map[string]any{"k": "v"}))
	_, err := s.AcquireNode(live, runID, "leased", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(live)
	cancel()
	other := unique("run")
	calls := map[string]func() error{
		"CreateRun": func() error {
			return s.CreateRun(ctx, store.RunRecord{RunID: other, BlueprintID: "bp", CreatedAt: now}, nil)
		},
		"GetRun": func() error { _, err := s.GetRun(ctx, runID); return err },
		"FinishRun": func() error {
			return s.FinishRun(ctx, runID, store.StatusCompleted, "", "", now)
		},
		"AcquireNode": func() error {
			_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
			return err
		},
		"ExtendLease":  func() error { return s.ExtendLease(ctx, runID, "leased", "w1", now.Add(2*time.Hour)) },
		"ReleaseLease": func() error { return s.ReleaseLease(ctx, runID, "leased", "w1") },
		"CommitNode": func() error {
			_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: 1, Sets: map[string]any{"k": "changed"}})
			return err
		},
		"SuspendNode": func() error {
			_, err := s.SuspendNode(ctx, runID, "leased", "w1", store.Wait{Reason: "timer"})
			return err
		},
		"ResumeNode": func() error {
			_, err := s.ResumeNode(ctx, runID, store.NodeCommit{NodeID: "leased", Output: 1, Token: "t", Sets: map[string]any{"k": "changed"}})
			return err
		},
		"SkipNodes":  func() error { return s.SkipNodes(ctx, runID, []string{"s"}) },
		"CloseNodes": func() error { return s.CloseNodes(ctx, runID, []string{"c"}) },
		"GetNodes":   func() error { _, err := s.GetNodes(ctx, runID, []string{"leased"}); return err },
		"Get":        func() error { _, _, err := s.Get(ctx, runID, "k"); return err },
		"GetMany":    func() error { _, err := s.GetMany(ctx, runID, []string{"k"}); return err },
		"Set":        func() error { return s.Set(ctx, runID, "k", "changed") },
		"Delete":     func() error { _, err := s.Delete(ctx, runID, "k"); return err },
		"Patch":      func() error { return s.Patch(ctx, runID, map[string]any{"k": "changed"}, nil) },
		"Snapshot":   func() error { _, err := s.Snapshot(ctx, runID); return err },
	}
	for name, call := range calls {
		assert.ErrorIs(t, call(), context.Canceled, name)
	}

	// Nothing changed.
	got, err := s.GetRun(live, runID)
	require.NoError(t, err)
	assert.Equal(t, store.StatusRunning, got.Status)
	assert.Empty(t, got.Waiting)
	_, err = s.GetRun(live, other)
	require.ErrorIs(t, err, store.ErrRunNotFound)
	snap, err := s.Snapshot(live, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "v"}, snap)
	recs, err := s.GetNodes(live, runID, []string{"leased", "n", "s", "c"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.Equal(t, "w1", recs["leased"].LeaseOwner)
	assertTime(t, now.Add(time.Hour), recs["leased"].LeaseUntil)
	assert.Equal(t, 1, recs["leased"].Attempts)
}
