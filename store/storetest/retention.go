package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

func retentionTests() []subtest[store.ContextStore] {
	return []subtest[store.ContextStore]{
		{name: "ExpireRunLater", fn: testExpireRunLater},
		{name: "ExpireRunPast", fn: testExpireRunPast},
		{name: "ExpireRunMissing", fn: testExpireRunMissing},
		{name: "DeleteRun", fn: testDeleteRun},
		{name: "DeleteRunMany", fn: testDeleteRunMany},
		{name: "DeleteRunMissing", fn: testDeleteRunMissing},
	}
}

// retentionRun creates a finished run with context keys and node records
// of several states, and returns what its context and nodes read.
func retentionRun(t *testing.T, s store.ContextStore, runID string) (map[string]any, map[string]*store.NodeRecord) {
	t.Helper()
	ctx := t.Context()
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", BlueprintVersion: "1", CreatedAt: now},
		map[string]any{"input": map[string]any{"id": 7}, "flag": true}))
	_, err := s.AcquireNode(ctx, runID, "a", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "a", Output: "out", Taken: []string{"b"}, Sets: map[string]any{"written": 1}})
	require.NoError(t, err)
	_, err = s.FailNode(ctx, runID, "b", "boom")
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"c"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"d"}))
	require.NoError(t, s.FinishRun(ctx, runID, store.StatusFailed, "boom", "b", now.Add(time.Second)))
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	nodes, err := s.ListNodes(ctx, runID)
	require.NoError(t, err)
	require.Len(t, nodes, 4)
	return snap, nodes
}

// testExpireRunLater: an expiry in the future changes nothing a caller
// reads, writes no item, and may be repeated.
func testExpireRunLater(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	snap, nodes := retentionRun(t, s, runID)
	before, err := s.GetRun(ctx, runID)
	require.NoError(t, err)

	at := time.Now().Add(time.Hour)
	require.NoError(t, s.ExpireRun(ctx, runID, at))
	require.NoError(t, s.ExpireRun(ctx, runID, at), "ExpireRun is idempotent")

	after, err := s.GetRun(ctx, runID)
	require.NoError(t, err, "a run is there until its expiry")
	assert.Zero(t, before.ExpiresAt)
	want := time.Unix(at.Unix(), 0)
	if at.After(want) {
		want = want.Add(time.Second) // kept to the second, rounded up
	}
	assert.True(t, want.Equal(after.ExpiresAt), "ExpiresAt %v, want %v", after.ExpiresAt, want)
	after.ExpiresAt = time.Time{}
	assert.Equal(t, before, after, "nothing else changes")
	gotSnap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, snap, gotSnap)
	gotNodes, err := s.ListNodes(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, nodes, gotNodes)

	// A deleted key is not written again by a later expiry.
	existed, err := s.Delete(ctx, runID, "flag")
	require.NoError(t, err)
	require.True(t, existed)
	require.NoError(t, s.ExpireRun(ctx, runID, at.Add(time.Hour)))
	_, ok, err := s.Get(ctx, runID, "flag")
	require.NoError(t, err)
	assert.False(t, ok, "ExpireRun recreated a deleted key")
	gotNodes, err = s.ListNodes(ctx, runID)
	require.NoError(t, err)
	assert.Len(t, gotNodes, len(nodes), "ExpireRun wrote node records")
}

// testExpireRunPast: a run whose expiry has passed reads as absent.
func testExpireRunPast(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID, other := unique("run"), unique("run")
	retentionRun(t, s, runID)
	retentionRun(t, s, other)
	require.NoError(t, s.ExpireRun(ctx, runID, time.Now().Add(-2*time.Second)))
	_, err := s.GetRun(ctx, runID)
	require.ErrorIs(t, err, store.ErrRunNotFound, "an expired run is absent before the store deletes it")
	_, err = s.GetRun(ctx, other)
	require.NoError(t, err, "another run is not expired")
	// Expiring it again is not an error: the record is still stored.
	require.NoError(t, s.ExpireRun(ctx, runID, time.Now().Add(-time.Second)))
}

func testExpireRunMissing(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	err := s.ExpireRun(ctx, unique("missing"), time.Now().Add(time.Hour))
	require.ErrorIs(t, err, store.ErrRunNotFound)
	// A run with no record but stray context keys.
	runID := unique("stray")
	require.NoError(t, s.Set(ctx, runID, "k", 1))
	err = s.ExpireRun(ctx, runID, time.Now().Add(time.Hour))
	require.ErrorIs(t, err, store.ErrRunNotFound)
	err = s.ExpireRun(ctx, "bad/id", time.Now().Add(time.Hour))
	require.Error(t, err)
}

// tombstones checks that every node record of a deleted run is a
// tombstone: closed and holding nothing else.
func tombstones(t *testing.T, s store.ContextStore, runID string, want int) {
	t.Helper()
	nodes, err := s.ListNodes(t.Context(), runID)
	require.NoError(t, err)
	assert.Len(t, nodes, want)
	for id, r := range nodes {
		assert.Equal(t, store.NodeClosed, r.State, id)
		assert.Nil(t, r.Output, id)
		assert.Empty(t, r.Taken, id)
		assert.Empty(t, r.LeaseOwner, id)
	}
}

// testDeleteRun: the run's data goes, its node records stay as closed
// tombstones that refuse a late acquisition, its id stays taken, the other
// runs' items stay, and a repeated deletion finds no run.
func testDeleteRun(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	// A run whose id extends the deleted one's is another run.
	sibling := runID + "-x"
	_, before := retentionRun(t, s, runID)
	sibSnap, sibNodes := retentionRun(t, s, sibling)

	until := time.Now().Add(time.Hour)
	require.NoError(t, s.DeleteRun(ctx, runID, until))
	_, err := s.GetRun(ctx, runID)
	require.ErrorIs(t, err, store.ErrRunNotFound)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Empty(t, snap)
	tombstones(t, s, runID, len(before))
	_, ok, err := s.Get(ctx, runID, "input")
	require.NoError(t, err)
	assert.False(t, ok)
	// A late job of the run finds its node closed, recorded or not.
	for id := range before {
		_, err := s.AcquireNode(ctx, runID, id, "late", time.Now().Add(time.Minute), time.Now())
		require.ErrorIs(t, err, store.ErrNodeClosed, id)
	}
	// Its id is taken until the tombstone expires, and a late expiry
	// changes nothing of it.
	err = s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: baseTime()}, nil)
	require.ErrorIs(t, err, store.ErrRunExists)
	require.ErrorIs(t, s.ExpireRun(ctx, runID, time.Now().Add(time.Minute)), store.ErrRunNotFound)
	_, err = s.GetRun(ctx, runID)
	require.ErrorIs(t, err, store.ErrRunNotFound)

	err = s.DeleteRun(ctx, runID, until)
	require.ErrorIs(t, err, store.ErrRunNotFound, "a repeated deletion")

	_, err = s.GetRun(ctx, sibling)
	require.NoError(t, err)
	got, err := s.Snapshot(ctx, sibling)
	require.NoError(t, err)
	assert.Equal(t, sibSnap, got)
	gotNodes, err := s.ListNodes(ctx, sibling)
	require.NoError(t, err)
	assert.Equal(t, sibNodes, gotNodes)
}

// testDeleteRunMany deletes a run of more items than one batch deletes,
// including an expired run.
func testDeleteRunMany(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	retentionRun(t, s, runID)
	const keys = 60
	for i := range keys {
		require.NoError(t, s.Set(ctx, runID, fmt.Sprintf("k%02d", i), i))
	}
	for i := range 10 {
		require.NoError(t, s.SkipNodes(ctx, runID, []string{fmt.Sprintf("n%02d", i)}))
	}
	require.NoError(t, s.ExpireRun(ctx, runID, time.Now().Add(time.Hour)))
	require.NoError(t, s.DeleteRun(ctx, runID, time.Now().Add(2*time.Hour)))
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Empty(t, snap)
	tombstones(t, s, runID, 4+10)
	_, err = s.GetRun(ctx, runID)
	require.ErrorIs(t, err, store.ErrRunNotFound)
}

func testDeleteRunMissing(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	err := s.DeleteRun(ctx, unique("missing"), time.Now().Add(time.Hour))
	require.ErrorIs(t, err, store.ErrRunNotFound)
	// Stray keys of a run with no record go all the same.
	runID := unique("stray")
	require.NoError(t, s.Set(ctx, runID, "k", 1))
	err = s.DeleteRun(ctx, runID, time.Now().Add(time.Hour))
	require.ErrorIs(t, err, store.ErrRunNotFound)
	_, ok, err := s.Get(ctx, runID, "k")
	require.NoError(t, err)
	assert.False(t, ok)
}
