package storetest

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

// The waiting state: SuspendNode, ResumeNode and how the other writes treat
// a waiting node.

// waitingTests are the subtests of TestContextStore on the waiting state.
func waitingTests() []subtest[store.ContextStore] {
	return []subtest[store.ContextStore]{
		{name: "SuspendNode", fn: testSuspendNode},
		{name: "SuspendNodeOnce", fn: testSuspendNodeOnce},
		{name: "SuspendNodeRefused", fn: testSuspendNodeRefused},
		{name: "SuspendNodeInvalid", fn: testSuspendNodeInvalid},
		{name: "WaitingNodeRefused", fn: testWaitingNodeRefused},
		{name: "ResumeNode", fn: testResumeNode},
		{name: "ResumeNodeOnce", fn: testResumeNodeOnce},
		{name: "ResumeNodeRefused", fn: testResumeNodeRefused},
		{name: "CloseWaitingNode", fn: testCloseWaitingNode},
		{name: "SkipWaitingNode", fn: testSkipWaitingNode},
		{name: "ResumeNodeRace", fn: testResumeNodeRace},
		{name: "SuspendCloseRace", fn: testSuspendCloseRace},
		{name: "ResumeCloseRace", fn: testResumeCloseRace},
		{name: "WaitingListRunning", fn: testWaitingListRunning},
		{name: "WakeNode", fn: testWakeNode},
		{name: "WakeNodeRefused", fn: testWakeNodeRefused},
	}
}

// sampleWait is a wait with every field set.
func sampleWait(now time.Time) store.Wait {
	return store.Wait{
		Reason:    "external_event",
		Details:   map[string]any{"eventName": "order-review", "n": 2.0, "nested": map[string]any{"l": []any{1, "x", nil}}},
		WakeAt:    now.Add(time.Hour),
		WebhookID: "hook-1",
	}
}

// assertWait asserts that got is the wait want as a store reads it back.
func assertWait(t *testing.T, want store.Wait, got *store.Wait, msgAndArgs ...any) {
	t.Helper()
	if !assert.NotNil(t, got, msgAndArgs...) {
		return
	}
	assert.Equal(t, want.Reason, got.Reason, msgAndArgs...)
	if want.Details == nil {
		assert.Empty(t, got.Details, msgAndArgs...)
	} else {
		assert.Equal(t, normalize(t, want.Details), any(got.Details), msgAndArgs...)
	}
	assertTime(t, want.WakeAt, got.WakeAt, msgAndArgs...)
	assert.Equal(t, want.WebhookID, got.WebhookID, msgAndArgs...)
}

// waitingRun creates a run and suspends its node "n" (acquired twice by w1)
// with w; it returns the run id and the waiting record.
func waitingRun(t *testing.T, s store.ContextStore, w store.Wait) (string, *store.NodeRecord) {
	t.Helper()
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, map[string]any{"k": "before"}))
	for range 2 {
		_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
		require.NoError(t, err)
	}
	rec, err := s.SuspendNode(ctx, runID, "n", "w1", w)
	require.NoError(t, err)
	return runID, rec
}

// assertWaiting asserts the run's Waiting set, as GetRun reads it.
func assertWaiting(t *testing.T, s store.ContextStore, runID string, want ...string) {
	t.Helper()
	run, err := s.GetRun(t.Context(), runID)
	require.NoError(t, err)
	if len(want) == 0 {
		assert.Empty(t, run.Waiting, "Waiting of run %s", runID)
		return
	}
	assert.Equal(t, want, run.Waiting, "Waiting of run %s", runID)
}

// testSuspendNode suspends a leased node: it waits, without a lease or an
// output, with its attempts and its Wait, and its run lists it.
func testSuspendNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, map[string]any{"k": "v"}))
	assertWaiting(t, s, runID)
	for range 2 {
		_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
		require.NoError(t, err)
	}
	w := sampleWait(now)

	start := time.Now().Truncate(time.Millisecond)
	rec, err := s.SuspendNode(ctx, runID, "n", "w1", w)
	end := time.Now()
	require.NoError(t, err)
	want := &store.NodeRecord{NodeID: "n", State: store.NodeWaiting, Attempts: 2}
	assertNodeRecord(t, want, rec)
	assertWait(t, w, rec.Wait)
	assert.Empty(t, rec.Token)
	assert.False(t, rec.UpdatedAt.Before(start), "UpdatedAt %v is before the write began at %v", rec.UpdatedAt, start)
	assert.False(t, rec.UpdatedAt.After(end), "UpdatedAt %v is after the write ended at %v", rec.UpdatedAt, end)
	assertWaiting(t, s, runID, "n")

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	require.Contains(t, recs, "n")
	assertNodeRecord(t, want, recs["n"])
	assertWait(t, w, recs["n"].Wait)
	listed, err := s.ListNodes(ctx, runID)
	require.NoError(t, err)
	require.Contains(t, listed, "n")
	assertNodeRecord(t, want, listed["n"])
	assertWait(t, w, listed["n"].Wait)

	// The Wait read is the caller's.
	recs["n"].Wait.Details["eventName"] = "changed"
	recs, err = s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertWait(t, w, recs["n"].Wait)

	// A waiting node has no output, and its lease is gone.
	_, ok, err := s.Get(ctx, runID, "_outputs.n")
	require.NoError(t, err)
	assert.False(t, ok, "a waiting node has no output")
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "v"}, snap)
	require.ErrorIs(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(time.Hour)), store.ErrLeaseLost)
	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w1"))

	// More waiting nodes: the set is sorted; a wait without details or
	// times round-trips too.
	for _, id := range []string{"z", "a"} {
		_, err := s.AcquireNode(ctx, runID, id, "w2", now.Add(time.Minute), now)
		require.NoError(t, err)
		rec, err := s.SuspendNode(ctx, runID, id, "w2", store.Wait{Reason: "timer"})
		require.NoError(t, err)
		assertNodeRecord(t, &store.NodeRecord{NodeID: id, State: store.NodeWaiting, Attempts: 1}, rec)
		assertWait(t, store.Wait{Reason: "timer"}, rec.Wait)
	}
	assertWaiting(t, s, runID, "a", "n", "z")
	recs, err = s.GetNodes(ctx, runID, []string{"n", "a"})
	require.NoError(t, err)
	assertNodeRecord(t, want, recs["n"])
	assertWait(t, w, recs["n"].Wait, "the release wrote nothing")
	assertTime(t, rec.UpdatedAt, recs["n"].UpdatedAt, "the release wrote nothing")

	// The run record returned is the caller's.
	run, err := s.GetRun(ctx, runID)
	require.NoError(t, err)
	run.Waiting[0] = "changed"
	assertWaiting(t, s, runID, "a", "n", "z")
}

// testSuspendNodeOnce: suspending a waiting node returns it as it is, its
// first Wait kept, whoever asks.
func testSuspendNodeOnce(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	w := sampleWait(baseTime())
	runID, first := waitingRun(t, s, w)

	time.Sleep(2 * time.Millisecond) // a later millisecond than the suspension
	for _, owner := range []string{"w1", "w2"} {
		rec, err := s.SuspendNode(ctx, runID, "n", owner, store.Wait{Reason: "timer", WakeAt: baseTime()})
		require.NoError(t, err, "suspending a waiting node is no error (%s)", owner)
		assertNodeRecord(t, first, rec)
		assertWait(t, w, rec.Wait, "the first Wait is kept")
		assertTime(t, first.UpdatedAt, rec.UpdatedAt, "nothing was written")
	}
	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertNodeRecord(t, first, recs["n"])
	assertWait(t, w, recs["n"].Wait)
	assertTime(t, first.UpdatedAt, recs["n"].UpdatedAt)
	assertWaiting(t, s, runID, "n")
}

// testSuspendNodeRefused: only the lease holder suspends a pending node;
// a resolved node is not suspended; nothing is written when refused.
func testSuspendNodeRefused(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, nil))
	w := sampleWait(now)

	_, err := s.AcquireNode(ctx, runID, "released", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	require.NoError(t, s.ReleaseLease(ctx, runID, "released", "w1"))
	_, err = s.AcquireNode(ctx, runID, "leased", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "committed", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "committed", Output: "out"})
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	_, err = s.AcquireNode(ctx, runID, "closed", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))
	_, err = s.AcquireNode(ctx, runID, "failed", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.FailNode(ctx, runID, "failed", "boom")
	require.NoError(t, err)
	ids := []string{"released", "leased", "committed", "skipped", "closed", "failed"}
	before, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	require.Len(t, before, len(ids))

	for _, tc := range []struct {
		node, owner string
		want        error
		state       string
	}{
		{"released", "w1", store.ErrLeaseLost, store.NodePending},
		{"released", "", store.ErrLeaseLost, store.NodePending},
		{"leased", "w2", store.ErrLeaseLost, store.NodePending},
		{"leased", "", store.ErrLeaseLost, store.NodePending},
		{"committed", "w1", store.ErrNodeCommitted, store.NodeCommitted},
		{"skipped", "w1", store.ErrNodeCommitted, store.NodeSkipped},
		{"closed", "w1", store.ErrNodeClosed, store.NodeClosed},
		{"failed", "w1", store.ErrNodeFailed, store.NodeFailed},
	} {
		rec, err := s.SuspendNode(ctx, runID, tc.node, tc.owner, w)
		require.ErrorIs(t, err, tc.want, "%s by %q", tc.node, tc.owner)
		require.NotNil(t, rec, "%s: the current record comes with the error", tc.node)
		assertNodeRecord(t, before[tc.node], rec)
		assert.Equal(t, tc.state, rec.State, tc.node)
		assert.Nil(t, rec.Wait, tc.node)
	}
	_, err = s.SuspendNode(ctx, runID, "absent", "w1", w)
	require.ErrorIs(t, err, store.ErrLeaseLost, "absent node")

	after, err := s.GetNodes(ctx, runID, append(ids, "absent"))
	require.NoError(t, err)
	require.Len(t, after, len(ids), "a refused suspension creates nothing")
	for _, id := range ids {
		assertNodeRecord(t, before[id], after[id])
		assertTime(t, before[id].UpdatedAt, after[id].UpdatedAt, "%s: nothing written", id)
		assert.Nil(t, after[id].Wait, id)
	}
	assert.Equal(t, "w1", after["leased"].LeaseOwner, "the holder keeps its lease")
	assertWaiting(t, s, runID)

	// A run without a record has no Waiting set to join.
	orphan := unique("run")
	_, err = s.AcquireNode(ctx, orphan, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	_, err = s.SuspendNode(ctx, orphan, "n", "w1", w)
	require.ErrorIs(t, err, store.ErrRunNotFound)
	recs, err := s.GetNodes(ctx, orphan, []string{"n"})
	require.NoError(t, err)
	assert.Equal(t, store.NodePending, recs["n"].State, "nothing written")
	assert.Equal(t, "w1", recs["n"].LeaseOwner)
	_, err = s.GetRun(ctx, orphan)
	require.ErrorIs(t, err, store.ErrRunNotFound, "no run record created")
}

// testSuspendNodeInvalid: a wait that is not JSON-like or too large is
// refused and nothing is written.
func testSuspendNodeInvalid(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, nil))
	_, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)

	_, err = s.SuspendNode(ctx, runID, "n", "w1", store.Wait{Reason: "timer", Details: map[string]any{"x": math.NaN()}})
	require.Error(t, err, "NaN details")
	_, err = s.SuspendNode(ctx, runID, "n", "w1", store.Wait{Reason: "timer", Details: map[string]any{"f": func() {}}})
	require.Error(t, err, "a func in the details")
	_, err = s.SuspendNode(ctx, runID, "n", "w1", store.Wait{Reason: "webhook", Details: map[string]any{"blob": strings.Repeat("x", 500*1024)}})
	require.ErrorIs(t, err, store.ErrValueTooLarge)
	var tooLarge *store.ValueTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, runID, tooLarge.RunID)
	assert.Equal(t, "_outputs.n", tooLarge.Key)

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assert.Equal(t, store.NodePending, recs["n"].State, "nothing written")
	assert.Equal(t, "w1", recs["n"].LeaseOwner)
	assertWaiting(t, s, runID)

	// A small wait still suspends it.
	rec, err := s.SuspendNode(ctx, runID, "n", "w1", store.Wait{Reason: "webhook", WebhookID: "h"})
	require.NoError(t, err)
	assert.Equal(t, store.NodeWaiting, rec.State)
}

// testWaitingNodeRefused: a waiting node is not acquired, committed or
// failed; it waits to be resumed.
func testWaitingNodeRefused(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	w := sampleWait(baseTime())
	runID, waiting := waitingRun(t, s, w)
	now := baseTime()
	check := func(rec *store.NodeRecord, err error, what string) {
		t.Helper()
		require.ErrorIs(t, err, store.ErrNodeWaiting, what)
		require.NotNil(t, rec, "%s: the current record comes with the error", what)
		assertNodeRecord(t, waiting, rec)
		assertWait(t, w, rec.Wait, what)
	}

	time.Sleep(2 * time.Millisecond) // a later millisecond than the suspension
	rec, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
	check(rec, err, "acquired by the former holder")
	rec, err = s.AcquireNode(ctx, runID, "n", "w2", now.Add(2*time.Hour), now.Add(time.Hour))
	check(rec, err, "acquired by another owner, later")
	rec, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "late"})
	check(rec, err, "committed")
	rec, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "late", Action: "a", Taken: []string{"x"},
		Sets: map[string]any{"k2": "after"}, Deletes: []string{"k"}})
	check(rec, err, "committed with context writes")
	rec, err = s.FailNode(ctx, runID, "n", "boom")
	check(rec, err, "failed")

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertNodeRecord(t, waiting, recs["n"])
	assert.Empty(t, recs["n"].Error)
	assertTime(t, waiting.UpdatedAt, recs["n"].UpdatedAt, "the refused calls wrote nothing")
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "before"}, snap, "the refused commits wrote nothing")
	assertWaiting(t, s, runID, "n")
}

// resumeCommit is a resume with every field and context writes.
func resumeCommit(token string) store.NodeCommit {
	return store.NodeCommit{
		NodeID:   "n",
		Output:   map[string]any{"approved": true, "by": "alice", "score": 2.0},
		Action:   "approved",
		Taken:    []string{"ship", "notify"},
		Staged:   map[string]any{"ship": map[string]any{"address": "x"}},
		Fallback: "",
		Sets:     map[string]any{"k": "after", "added": []any{int64(1)}},
		Deletes:  []string{"gone", "never-existed"},
		Token:    token,
	}
}

// testResumeNode resumes a waiting node: its outcome and context writes
// are committed together, it keeps its attempts and Wait, and it leaves its
// run's Waiting set.
func testResumeNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	w := sampleWait(baseTime())
	runID, waiting := waitingRun(t, s, w)
	require.NoError(t, s.Set(ctx, runID, "gone", 1))
	_, err := s.AcquireNode(ctx, runID, "other", "w1", baseTime().Add(time.Minute), baseTime())
	require.NoError(t, err)
	_, err = s.SuspendNode(ctx, runID, "other", "w1", store.Wait{Reason: "timer"})
	require.NoError(t, err)
	assertWaiting(t, s, runID, "n", "other")

	c := resumeCommit("token-1")
	time.Sleep(2 * time.Millisecond) // a later millisecond than the suspension
	start := time.Now().Truncate(time.Millisecond)
	rec, err := s.ResumeNode(ctx, runID, c)
	end := time.Now()
	require.NoError(t, err)
	want := &store.NodeRecord{
		NodeID:   "n",
		State:    store.NodeCommitted,
		Attempts: waiting.Attempts,
		Output:   normalize(t, c.Output),
		Action:   c.Action,
		Taken:    c.Taken,
		Staged:   normalize(t, c.Staged).(map[string]any),
	}
	assertNodeRecord(t, want, rec)
	assert.Equal(t, "token-1", rec.Token)
	assertWait(t, w, rec.Wait, "the Wait is kept as history")
	assert.False(t, rec.UpdatedAt.Before(start), "UpdatedAt %v is before the write began at %v", rec.UpdatedAt, start)
	assert.False(t, rec.UpdatedAt.After(end), "UpdatedAt %v is after the write ended at %v", rec.UpdatedAt, end)

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertNodeRecord(t, want, recs["n"])
	assert.Equal(t, "token-1", recs["n"].Token)
	assertWait(t, w, recs["n"].Wait)
	assertWaiting(t, s, runID, "other")

	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"k":          "after",
		"added":      []any{int64(1)},
		"_outputs.n": normalize(t, c.Output),
	}, snap)

	// Resumed is committed: no more acquisition, suspension or failure.
	_, err = s.AcquireNode(ctx, runID, "n", "w1", baseTime().Add(time.Minute), baseTime())
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	_, err = s.SuspendNode(ctx, runID, "n", "w1", w)
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	_, err = s.FailNode(ctx, runID, "n", "boom")
	require.ErrorIs(t, err, store.ErrNodeCommitted)

	// A resume without context writes or output.
	rec, err = s.ResumeNode(ctx, runID, store.NodeCommit{NodeID: "other", Token: "t"})
	require.NoError(t, err)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "other", State: store.NodeCommitted, Attempts: 1}, rec)
	assertWait(t, store.Wait{Reason: "timer"}, rec.Wait)
	got, ok, err := s.Get(ctx, runID, "_outputs.other")
	require.NoError(t, err)
	assert.True(t, ok, "a resumed nil output is present")
	assert.Nil(t, got)
	assertWaiting(t, s, runID)
}

// testResumeNodeOnce: a retried resume (same commit, same token) succeeds
// and writes nothing; any other resume or commit of the node is refused.
func testResumeNodeOnce(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID, _ := waitingRun(t, s, store.Wait{Reason: "webhook", WebhookID: "h"})
	c := resumeCommit("token-1")
	first, err := s.ResumeNode(ctx, runID, c)
	require.NoError(t, err)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)

	time.Sleep(2 * time.Millisecond) // a later millisecond than the resume
	rec, err := s.ResumeNode(ctx, runID, c)
	require.NoError(t, err, "the same resume, retried, succeeds")
	assertNodeRecord(t, first, rec)
	assert.Equal(t, "token-1", rec.Token)
	assertTime(t, first.UpdatedAt, rec.UpdatedAt, "the retried resume wrote nothing")

	for _, diff := range []struct {
		name   string
		change func(c *store.NodeCommit)
	}{
		{"token", func(c *store.NodeCommit) { c.Token = "token-2" }},
		{"empty token", func(c *store.NodeCommit) { c.Token = "" }},
		{"output", func(c *store.NodeCommit) { c.Output = "other" }},
		{"action", func(c *store.NodeCommit) { c.Action = "other" }},
		{"taken", func(c *store.NodeCommit) { c.Taken = []string{"z"} }},
		{"staged", func(c *store.NodeCommit) { c.Staged = map[string]any{"z": "other"} }},
		{"fallback", func(c *store.NodeCommit) { c.Fallback = "other" }},
	} {
		c := resumeCommit("token-1")
		diff.change(&c)
		c.Sets = map[string]any{"k": "second", "k2": "second"}
		rec, err := s.ResumeNode(ctx, runID, c)
		require.ErrorIs(t, err, store.ErrNodeCommitted, "a resume with another %s", diff.name)
		require.NotNil(t, rec)
		assertNodeRecord(t, first, rec)
		assert.Equal(t, "token-1", rec.Token)
	}

	// CommitNode carries no token: even the same outcome is another commit.
	same := resumeCommit("")
	rec, err = s.CommitNode(ctx, runID, same)
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	assertNodeRecord(t, first, rec)

	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertNodeRecord(t, first, recs["n"])
	assertTime(t, first.UpdatedAt, recs["n"].UpdatedAt)
	again, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, snap, again, "the refused resumes wrote nothing")
	assertWaiting(t, s, runID)
}

// testResumeNodeRefused: only a waiting node is resumed.
func testResumeNodeRefused(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, map[string]any{"k": "before"}))
	_, err := s.AcquireNode(ctx, runID, "pending", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	committed := store.NodeCommit{NodeID: "committed", Output: "out", Token: "t"}
	_, err = s.CommitNode(ctx, runID, committed)
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))
	_, err = s.FailNode(ctx, runID, "failed", "boom")
	require.NoError(t, err)
	ids := []string{"pending", "committed", "skipped", "closed", "failed"}
	before, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	require.Len(t, before, len(ids))

	for _, tc := range []struct {
		node string
		want error
	}{
		{"pending", store.ErrNotWaiting},
		{"committed", store.ErrNodeCommitted},
		{"skipped", store.ErrNodeCommitted},
		{"closed", store.ErrNodeClosed},
		{"failed", store.ErrNodeFailed},
	} {
		c := store.NodeCommit{NodeID: tc.node, Output: "out", Token: "t", Sets: map[string]any{"k": "after"}}
		rec, err := s.ResumeNode(ctx, runID, c)
		require.ErrorIs(t, err, tc.want, tc.node)
		require.NotNil(t, rec, "%s: the current record comes with the error", tc.node)
		assertNodeRecord(t, before[tc.node], rec)
	}
	// A node committed by CommitNode was never resumed, even with the
	// same outcome and token.
	rec, err := s.ResumeNode(ctx, runID, committed)
	require.ErrorIs(t, err, store.ErrNodeCommitted, "a committed node resumed with its own commit")
	assertNodeRecord(t, before["committed"], rec)
	_, err = s.ResumeNode(ctx, runID, store.NodeCommit{NodeID: "absent", Output: "out", Token: "t"})
	require.ErrorIs(t, err, store.ErrNotWaiting, "absent")

	after, err := s.GetNodes(ctx, runID, append(ids, "absent"))
	require.NoError(t, err)
	require.Len(t, after, len(ids), "a refused resume creates nothing")
	for _, id := range ids {
		assertNodeRecord(t, before[id], after[id])
		assertTime(t, before[id].UpdatedAt, after[id].UpdatedAt, "%s: nothing written", id)
	}
	assert.Equal(t, "w1", after["pending"].LeaseOwner)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "before", "_outputs.committed": "out"}, snap, "the refused resumes wrote nothing")
}

// testCloseWaitingNode: closing a waiting node ends its wait: it can no
// longer be resumed and it leaves the run's Waiting set.
func testCloseWaitingNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	w := sampleWait(baseTime())
	runID, waiting := waitingRun(t, s, w)

	require.NoError(t, s.CloseNodes(ctx, runID, []string{"n", "absent"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"n"}), "idempotent")
	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertNodeRecord(t, &store.NodeRecord{NodeID: "n", State: store.NodeClosed, Attempts: waiting.Attempts}, recs["n"])
	assertWaiting(t, s, runID)

	rec, err := s.ResumeNode(ctx, runID, resumeCommit("t"))
	require.ErrorIs(t, err, store.ErrNodeClosed)
	require.NotNil(t, rec)
	assert.Equal(t, store.NodeClosed, rec.State)
	_, err = s.AcquireNode(ctx, runID, "n", "w1", baseTime().Add(time.Minute), baseTime())
	require.ErrorIs(t, err, store.ErrNodeClosed)
	_, err = s.SuspendNode(ctx, runID, "n", "w1", w)
	require.ErrorIs(t, err, store.ErrNodeClosed)
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"k": "before"}, snap, "the refused resume wrote nothing")
	assertWaiting(t, s, runID)
}

// testSkipWaitingNode: skipping leaves a waiting node waiting.
func testSkipWaitingNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	w := sampleWait(baseTime())
	runID, waiting := waitingRun(t, s, w)

	time.Sleep(2 * time.Millisecond) // a later millisecond than the suspension
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"n", "absent"}))
	recs, err := s.GetNodes(ctx, runID, []string{"n", "absent"})
	require.NoError(t, err)
	assertNodeRecord(t, waiting, recs["n"])
	assertWait(t, w, recs["n"].Wait)
	assertTime(t, waiting.UpdatedAt, recs["n"].UpdatedAt, "the skip wrote nothing")
	assert.Equal(t, store.NodeSkipped, recs["absent"].State)
	assertWaiting(t, s, runID, "n")

	rec, err := s.ResumeNode(ctx, runID, resumeCommit("t"))
	require.NoError(t, err, "still resumable")
	assert.Equal(t, store.NodeCommitted, rec.State)
	assertWaiting(t, s, runID)
}

// testResumeNodeRace races resumes of one waiting node, each with its own
// token, outcome and writes: exactly one wins.
func testResumeNodeRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID, _ := waitingRun(t, s, store.Wait{Reason: "external_event"})
	recs := make([]*store.NodeRecord, racers)
	errs := race(racers, func(i int) error {
		var err error
		recs[i], err = s.ResumeNode(ctx, runID, store.NodeCommit{
			NodeID:  "n",
			Output:  map[string]any{"by": int64(i)},
			Action:  fmt.Sprint("action-", i),
			Sets:    map[string]any{"winner": int64(i), fmt.Sprint("by-", i): true},
			Deletes: []string{"k"},
			Token:   fmt.Sprint("token-", i),
		})
		return err
	})
	w := winners(errs)
	require.Len(t, w, 1, "exactly one resume succeeds: %v", errs)
	win := recs[w[0]]
	assert.Equal(t, map[string]any{"by": int64(w[0])}, win.Output)
	assert.Equal(t, fmt.Sprint("token-", w[0]), win.Token)
	for i, err := range errs {
		if i == w[0] {
			continue
		}
		require.ErrorIs(t, err, store.ErrNodeCommitted, "resume %d", i)
		require.NotNil(t, recs[i])
		assert.Equal(t, win.Output, recs[i].Output, "a loser sees the winner's record")
		assert.Equal(t, win.Token, recs[i].Token)
	}
	snap, err := s.Snapshot(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"winner":                int64(w[0]),
		fmt.Sprint("by-", w[0]): true,
		"_outputs.n":            map[string]any{"by": int64(w[0])},
	}, snap, "only the winner's writes are applied")
	assertWaiting(t, s, runID)
}

// testSuspendCloseRace races the suspension of nodes with their close:
// each node ends closed and out of the Waiting set, its suspension either
// done before the close or refused with ErrNodeClosed.
func testSuspendCloseRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, nil))
	const nodes = racers / 2
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprint("n", i)
		_, err := s.AcquireNode(ctx, runID, ids[i], "w", now.Add(time.Minute), now)
		require.NoError(t, err)
	}
	errs := race(racers, func(i int) error {
		if i%2 == 0 {
			_, err := s.SuspendNode(ctx, runID, ids[i/2], "w", store.Wait{Reason: "timer"})
			return err
		}
		return s.CloseNodes(ctx, runID, []string{ids[i/2]})
	})
	recs, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	for n, id := range ids {
		require.NoError(t, errs[2*n+1], "CloseNodes")
		if err := errs[2*n]; err != nil {
			require.ErrorIs(t, err, store.ErrNodeClosed, id)
		}
		require.Contains(t, recs, id)
		assert.Equal(t, store.NodeClosed, recs[id].State, id)
	}
	assertWaiting(t, s, runID)
}

// testResumeCloseRace races the resume of waiting nodes with their close:
// each ends either committed (with its writes) or closed (without), and out
// of the Waiting set.
func testResumeCloseRace(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now}, nil))
	const nodes = racers / 2
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprint("n", i)
		_, err := s.AcquireNode(ctx, runID, ids[i], "w", now.Add(time.Minute), now)
		require.NoError(t, err)
		_, err = s.SuspendNode(ctx, runID, ids[i], "w", store.Wait{Reason: "timer"})
		require.NoError(t, err)
	}
	assertWaiting(t, s, runID, ids...)
	errs := race(racers, func(i int) error {
		if i%2 == 0 {
			_, err := s.ResumeNode(ctx, runID, store.NodeCommit{NodeID: ids[i/2], Output: int64(i), Sets: map[string]any{ids[i/2]: true}, Token: "t"})
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
	assertWaiting(t, s, runID)
}

// testWaitingListRunning: ListRunning returns the Waiting set of each run.
func testWaitingListRunning(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	prefix := unique("waitlist") + "-"
	// Long ago, so that the runs of other subtests are not in range.
	base := baseTime().Add(-2000 * time.Hour)
	now := baseTime()
	runs := []string{prefix + "0", prefix + "1"}
	for i, id := range runs {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: id, BlueprintID: "bp", CreatedAt: base.Add(time.Duration(i) * time.Second)}, nil))
	}
	for _, node := range []string{"b", "a", "c"} {
		_, err := s.AcquireNode(ctx, runs[0], node, "w", now.Add(time.Minute), now)
		require.NoError(t, err)
		_, err = s.SuspendNode(ctx, runs[0], node, "w", store.Wait{Reason: "timer"})
		require.NoError(t, err)
	}
	_, err := s.ResumeNode(ctx, runs[0], store.NodeCommit{NodeID: "b", Token: "t"})
	require.NoError(t, err)
	assertWaiting(t, s, runs[0], "a", "c")
	assertWaiting(t, s, runs[1])

	listed := func(c *assert.CollectT) map[string][]string {
		all, ok := listAll(c, ctx, s, base.Add(time.Minute), 0)
		if !ok {
			return nil
		}
		got := map[string][]string{}
		for _, run := range all {
			if strings.HasPrefix(run.RunID, prefix) {
				got[run.RunID] = run.Waiting
			}
		}
		return got
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got := listed(c)
		if assert.Len(c, got, 2) {
			assert.Equal(c, []string{"a", "c"}, got[runs[0]])
			assert.Empty(c, got[runs[1]])
		}
	}, eventually, eventuallyTick)

	require.NoError(t, s.CloseNodes(ctx, runs[0], []string{"a"}))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got := listed(c)
		if assert.Len(c, got, 2) {
			assert.Equal(c, []string{"c"}, got[runs[0]])
		}
	}, eventually, eventuallyTick)

	for _, id := range runs {
		require.NoError(t, s.FinishRun(ctx, id, store.StatusCancelled, "", "", now))
	}
}

// testWakeNode wakes a waiting node: it is pending again, leased by the
// waker, with its attempts and its Wait kept, out of its run's Waiting set;
// a retry by the same owner succeeds; the next attempt is counted by
// AcquireNode and the node can be suspended again.
func testWakeNode(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	w := sampleWait(baseTime())
	runID, waiting := waitingRun(t, s, w)
	require.Equal(t, 2, waiting.Attempts)
	until := baseTime().Add(2 * time.Minute)

	rec, err := s.WakeNode(ctx, runID, "n", "w2", 2, until)
	require.NoError(t, err)
	assert.Equal(t, store.NodePending, rec.State)
	assert.Equal(t, 2, rec.Attempts)
	assert.Equal(t, "w2", rec.LeaseOwner)
	assertTime(t, until, rec.LeaseUntil)
	assertWait(t, w, rec.Wait, "the wait is kept as history")
	assertWaiting(t, s, runID)

	again, err := s.WakeNode(ctx, runID, "n", "w2", 2, until)
	require.NoError(t, err, "a retry by the same owner")
	assert.Equal(t, store.NodePending, again.State)

	_, err = s.WakeNode(ctx, runID, "n", "w3", 2, until)
	require.ErrorIs(t, err, store.ErrNotWaiting, "pending for another owner")

	// The waker's lease lets it count the next attempt and suspend again.
	rec, err = s.AcquireNode(ctx, runID, "n", "w2", until, baseTime())
	require.NoError(t, err)
	assert.Equal(t, 3, rec.Attempts)
	_, err = s.SuspendNode(ctx, runID, "n", "w2", w)
	require.NoError(t, err)
	assertWaiting(t, s, runID, "n")

	// A waker that decided on the earlier suspension wakes nothing.
	_, err = s.WakeNode(ctx, runID, "n", "w4", 2, until)
	require.ErrorIs(t, err, store.ErrNotWaiting, "waiting after another number of attempts")
	assertWaiting(t, s, runID, "n")
}

// testWakeNodeRefused refuses to wake what does not wait, and writes
// nothing.
func testWakeNodeRefused(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	now := baseTime()
	runID, _ := waitingRun(t, s, sampleWait(now))
	until := now.Add(time.Minute)

	rec, err := s.WakeNode(ctx, runID, "absent", "w1", 0, until)
	require.ErrorIs(t, err, store.ErrNotWaiting)
	assert.Nil(t, rec)

	_, err = s.AcquireNode(ctx, runID, "p", "w1", until, now)
	require.NoError(t, err)
	_, err = s.WakeNode(ctx, runID, "p", "w2", 1, until)
	require.ErrorIs(t, err, store.ErrNotWaiting, "pending")

	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "p", Output: "x"})
	require.NoError(t, err)
	_, err = s.WakeNode(ctx, runID, "p", "w2", 1, until)
	require.ErrorIs(t, err, store.ErrNodeCommitted)

	require.NoError(t, s.CloseNodes(ctx, runID, []string{"n"}))
	rec, err = s.WakeNode(ctx, runID, "n", "w2", 2, until)
	require.ErrorIs(t, err, store.ErrNodeClosed)
	assert.Equal(t, store.NodeClosed, rec.State)

	_, err = s.WakeNode(ctx, runID, "n", "", 2, until)
	require.Error(t, err, "an empty owner")
}
