package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

// testFailNode fails an absent and a pending node.
func testFailNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()

	start := time.Now().Truncate(time.Millisecond)
	rec, err := s.FailNode(ctx, runID, "absent", "boom")
	end := time.Now()
	require.NoError(t, err)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "absent", State: store.NodeFailed}, rec)
	assert.Equal(t, "boom", rec.Error)
	assert.False(t, rec.UpdatedAt.Before(start), "UpdatedAt %v is before the write began at %v", rec.UpdatedAt, start)
	assert.False(t, rec.UpdatedAt.After(end), "UpdatedAt %v is after the write ended at %v", rec.UpdatedAt, end)

	_, err = s.AcquireNode(ctx, runID, "pending", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "pending", "w1", now.Add(2*time.Minute), now)
	require.NoError(t, err)
	rec, err = s.FailNode(ctx, runID, "pending", "attempts exhausted")
	require.NoError(t, err)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "pending", State: store.NodeFailed, Attempts: 2}, rec)
	assert.Equal(t, "attempts exhausted", rec.Error)

	// Released lease: still pending, still fails.
	_, err = s.AcquireNode(ctx, runID, "released", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	require.NoError(t, s.ReleaseLease(ctx, runID, "released", "w1"))
	rec, err = s.FailNode(ctx, runID, "released", "later")
	require.NoError(t, err)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "released", State: store.NodeFailed, Attempts: 1}, rec)

	ids := []string{"absent", "pending", "released"}
	want := map[string]*store.NodeRecord{
		"absent":   {NodeID: "absent", State: store.NodeFailed, Error: "boom"},
		"pending":  {NodeID: "pending", State: store.NodeFailed, Attempts: 2, Error: "attempts exhausted"},
		"released": {NodeID: "released", State: store.NodeFailed, Attempts: 1, Error: "later"},
	}
	recs, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	require.Len(t, recs, len(ids))
	for _, id := range ids {
		assertNodeRecord(t, want[id], recs[id])
		assert.Equal(t, want[id].Error, recs[id].Error, id)
		assert.False(t, recs[id].UpdatedAt.IsZero(), id)
	}
	listed, err := s.ListNodes(ctx, runID)
	require.NoError(t, err)
	require.Len(t, listed, len(ids))
	for _, id := range ids {
		assertNodeRecord(t, want[id], listed[id])
		assert.Equal(t, want[id].Error, listed[id].Error, id)
	}

	_, ok, err := s.Get(ctx, runID, "_outputs.absent")
	require.NoError(t, err)
	assert.False(t, ok, "a failed node has no output")
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Empty(t, snap, "a failed node has no output")
}

// testFailNodeOnce: failing a failed node returns it as it is.
func testFailNodeOnce(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	first, err := s.FailNode(ctx, runID, "n", "first")
	require.NoError(t, err)

	time.Sleep(2 * time.Millisecond) // a later millisecond than the first write
	rec, err := s.FailNode(ctx, runID, "n", "second")
	require.NoError(t, err, "failing a failed node is no error")
	assertNodeRecord(t, first, rec)
	assert.Equal(t, "first", rec.Error, "the first reason is kept")
	assertTime(t, first.UpdatedAt, rec.UpdatedAt, "nothing was written")

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assertNodeRecord(t, first, recs["n"])
	assert.Equal(t, "first", recs["n"].Error)
	assertTime(t, first.UpdatedAt, recs["n"].UpdatedAt)
}

// testFailNodeResolved: a committed, skipped or closed node is not failed.
func testFailNodeResolved(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "committed", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	committed, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "committed", Output: "out", Action: "a", Taken: []string{"x"}})
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	_, err = s.AcquireNode(ctx, runID, "closed", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))

	rec, err := s.FailNode(ctx, runID, "committed", "too late")
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	assertNodeRecord(t, committed, rec)
	assert.Empty(t, rec.Error)

	rec, err = s.FailNode(ctx, runID, "skipped", "too late")
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "skipped", State: store.NodeSkipped}, rec)
	assert.Empty(t, rec.Error)

	rec, err = s.FailNode(ctx, runID, "closed", "too late")
	require.ErrorIs(t, err, store.ErrNodeClosed)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "closed", State: store.NodeClosed, Attempts: 1}, rec)
	assert.Empty(t, rec.Error)

	recs, err := s.GetNodes(ctx, runID, []string{"committed", "skipped", "closed"})
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assertNodeRecord(t, committed, recs["committed"])
	assert.Equal(t, store.NodeSkipped, recs["skipped"].State)
	assert.Equal(t, store.NodeClosed, recs["closed"].State)
	for id, r := range recs {
		assert.Empty(t, r.Error, id)
	}
}

// testFailedNodeRefused: a failed node is never acquired, committed, skipped
// or closed, and its lease cannot be extended.
func testFailedNodeRefused(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.Set(ctx, runID, "k", "before"))
	_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	failed, err := s.FailNode(ctx, runID, "n", "boom")
	require.NoError(t, err)
	want := &store.NodeRecord{NodeID: "n", State: store.NodeFailed, Attempts: 1}

	rec, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.ErrorIs(t, err, store.ErrNodeFailed, "the former holder")
	require.NotNil(t, rec, "the current record comes with the error")
	assertNodeRecord(t, want, rec)
	assert.Equal(t, "boom", rec.Error)
	rec, err = s.AcquireNode(ctx, runID, "n", "w2", now.Add(time.Hour), now.Add(time.Hour))
	require.ErrorIs(t, err, store.ErrNodeFailed, "another owner")
	assertNodeRecord(t, want, rec)

	require.ErrorIs(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(time.Hour)), store.ErrLeaseLost)
	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w1"))

	for _, c := range []store.NodeCommit{
		{NodeID: "n", Output: "late"},
		{NodeID: "n", Output: "late", Action: "a", Taken: []string{"x"}, Sets: map[string]any{"k2": "after"}, Deletes: []string{"k"}},
	} {
		rec, err = s.CommitNode(ctx, runID, c)
		require.ErrorIs(t, err, store.ErrNodeFailed)
		require.NotNil(t, rec)
		assertNodeRecord(t, want, rec)
		assert.Equal(t, "boom", rec.Error)
	}

	require.NoError(t, s.CloseNodes(ctx, runID, []string{"n"}))
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"n"}))

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assertNodeRecord(t, want, recs["n"])
	assert.Equal(t, "boom", recs["n"].Error)
	assertTime(t, failed.UpdatedAt, recs["n"].UpdatedAt, "the refused calls wrote nothing")

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "before"}, snap, "refused commits wrote nothing")
}

// testFailCommitRace races FailNode calls with different reasons against one
// commit of the same node: either the commit wins and every FailNode is
// refused, or one FailNode wins, the commit is refused and every FailNode
// returns the winning reason.
func testFailCommitRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	_, err := s.AcquireNode(ctx, runID, "n", "w", now.Add(time.Minute), now)
	require.NoError(t, err)
	const committer = racers / 2
	reasons := make([]string, racers)
	for i := range reasons {
		reasons[i] = fmt.Sprint("reason-", i)
	}
	recs := make([]*store.NodeRecord, racers)
	errs := race(racers, func(i int) error {
		var err error
		if i == committer {
			recs[i], err = s.CommitNode(ctx, runID, store.NodeCommit{
				NodeID: "n", Output: "out", Action: "a", Taken: []string{"x"}, Sets: map[string]any{"k": true},
			})
			return err
		}
		recs[i], err = s.FailNode(ctx, runID, "n", reasons[i])
		return err
	})

	stored, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, stored, "n")
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)

	if errs[committer] == nil {
		assert.Equal(t, store.NodeCommitted, stored["n"].State)
		assert.Equal(t, "out", stored["n"].Output)
		assert.Empty(t, stored["n"].Error)
		assert.Equal(t, map[string]any{"k": true, "_outputs.n": "out"}, snap)
		for i, err := range errs {
			if i == committer {
				continue
			}
			require.ErrorIs(t, err, store.ErrNodeCommitted, "FailNode %d after the commit", i)
			require.NotNil(t, recs[i])
			assert.Equal(t, store.NodeCommitted, recs[i].State)
			assert.Equal(t, "out", recs[i].Output)
		}
		return
	}

	require.ErrorIs(t, errs[committer], store.ErrNodeFailed, "the commit lost")
	require.NotNil(t, recs[committer])
	assert.Equal(t, store.NodeFailed, recs[committer].State)
	assert.Equal(t, store.NodeFailed, stored["n"].State)
	assert.Equal(t, 1, stored["n"].Attempts)
	assert.Nil(t, stored["n"].Output)
	assert.Empty(t, stored["n"].LeaseOwner)
	win := stored["n"].Error
	assert.True(t, slices.Contains(reasons, win) && win != reasons[committer], "the reason %q is one of the FailNode calls'", win)
	assert.Equal(t, win, recs[committer].Error, "the refused commit sees the winning reason")
	for i, err := range errs {
		if i == committer {
			continue
		}
		require.NoError(t, err, "FailNode %d", i)
		require.NotNil(t, recs[i])
		assert.Equal(t, store.NodeFailed, recs[i].State)
		assert.Equal(t, win, recs[i].Error, "FailNode %d returns the winning reason", i)
	}
	assert.Empty(t, snap, "the refused commit wrote nothing")
}

// testCommitNodeIdentical: a commit identical to the committed one succeeds
// (a retried commit whose first response was lost); a different one is
// refused.
func testCommitNodeIdentical(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	for _, tc := range []struct {
		name string
		c    store.NodeCommit
	}{
		{"outcome only", store.NodeCommit{
			NodeID: "plain", Output: map[string]any{"n": 2.0, "l": []any{"a", int64(1)}}, Action: "ok", Taken: []string{"x", "y"},
			Staged: map[string]any{"x": map[string]any{"v": 1.5}}, Fallback: "fb",
		}},
		{"with context writes", store.NodeCommit{
			NodeID: "writes", Output: "out", Action: "ok", Taken: []string{"x"},
			Sets: map[string]any{"k-" + "writes": "v"}, Deletes: []string{"gone"},
		}},
		{"nil output", store.NodeCommit{NodeID: "nil"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, err := s.CommitNode(ctx, runID, tc.c)
			require.NoError(t, err)

			time.Sleep(2 * time.Millisecond) // a later millisecond than the commit
			rec, err := s.CommitNode(ctx, runID, tc.c)
			require.NoError(t, err, "an identical commit succeeds")
			assertNodeRecord(t, first, rec)
			assertTime(t, first.UpdatedAt, rec.UpdatedAt, "the identical commit wrote nothing")

			for _, diff := range []struct {
				name   string
				change func(c *store.NodeCommit)
			}{
				{"output", func(c *store.NodeCommit) { c.Output = "other" }},
				{"action", func(c *store.NodeCommit) { c.Action = "other" }},
				{"taken", func(c *store.NodeCommit) { c.Taken = append(slices.Clone(c.Taken), "z") }},
				{"staged", func(c *store.NodeCommit) { c.Staged = map[string]any{"z": "other"} }},
				{"fallback", func(c *store.NodeCommit) { c.Fallback = "other" }},
			} {
				c := tc.c
				diff.change(&c)
				rec, err := s.CommitNode(ctx, runID, c)
				require.ErrorIs(t, err, store.ErrNodeCommitted, "a commit with another %s", diff.name)
				assertNodeRecord(t, first, rec)
			}
			recs, err := s.GetNodes(ctx, runID, []string{tc.c.NodeID})
			require.NoError(t, err)
			assertNodeRecord(t, first, recs[tc.c.NodeID])
			assertTime(t, first.UpdatedAt, recs[tc.c.NodeID].UpdatedAt)
		})
	}

	// A skipped node is not committed: even an empty commit is refused.
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	rec, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "skipped"})
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	assert.Equal(t, store.NodeSkipped, rec.State)

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"_outputs.plain":  map[string]any{"n": int64(2), "l": []any{"a", int64(1)}},
		"_outputs.writes": "out",
		"_outputs.nil":    nil,
		"k-writes":        "v",
	}, snap)
}
