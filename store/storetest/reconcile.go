package storetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/store"
)

// The reads of a reconciler, which looks for stalled runs: ListRunning and
// ListNodes. Every store in the shared table of a suite sees the runs of
// every other subtest, so these tests keep to the runs whose ids they made.

// eventually bounds the wait for an eventually consistent listing (the
// running runs index of DynamoDB).
const (
	eventually     = 10 * time.Second
	eventuallyTick = 50 * time.Millisecond
)

// reconcileStore is the part of a context store a reconciler reads.
type reconcileStore interface {
	ListRunning(ctx context.Context, createdBefore time.Time, cursor string, limit int) (runs []store.RunRecord, next string, err error)
	ListNodes(ctx context.Context, runID string) (map[string]*store.NodeRecord, error)
}

// reconcilerOf returns s as a reconcileStore, or skips the test when s does
// not implement it.
func reconcilerOf(t *testing.T, s store.ContextStore) reconcileStore {
	t.Helper()
	r, ok := s.(reconcileStore)
	if !ok {
		t.Skipf("%T has no ListRunning and ListNodes", s)
	}
	return r
}

// listAll pages through ListRunning with limit until next is "" and returns
// the runs, checking what holds for every page and for the whole listing.
func listAll(c *assert.CollectT, ctx context.Context, r reconcileStore, createdBefore time.Time, limit int) ([]store.RunRecord, bool) {
	const maxPages = 500
	var all []store.RunRecord
	cursor := ""
	for range maxPages {
		runs, next, err := r.ListRunning(ctx, createdBefore, cursor, limit)
		if !assert.NoError(c, err) {
			return nil, false
		}
		pageLimit := limit
		if pageLimit <= 0 {
			pageLimit = 100
		}
		assert.LessOrEqual(c, len(runs), pageLimit, "a page holds at most limit runs")
		all = append(all, runs...)
		if next == "" {
			for i, run := range all {
				assert.Equal(c, store.StatusRunning, run.Status, run.RunID)
				assert.True(c, run.CreatedAt.Before(createdBefore), "%s created at %v, not before %v", run.RunID, run.CreatedAt, createdBefore)
				if i > 0 {
					assert.False(c, run.CreatedAt.Before(all[i-1].CreatedAt), "oldest first: %s after %s", run.RunID, all[i-1].RunID)
				}
			}
			return all, true
		}
		cursor = next
	}
	assert.Fail(c, fmt.Sprintf("ListRunning still had a next cursor after %d pages of %d", maxPages, limit))
	return nil, false
}

// own returns the ids of the runs whose id starts with prefix, in order.
func own(runs []store.RunRecord, prefix string) []string {
	var ids []string
	for _, run := range runs {
		if strings.HasPrefix(run.RunID, prefix) {
			ids = append(ids, run.RunID)
		}
	}
	return ids
}

func testListRunning(t *testing.T, s store.ContextStore) {
	r := reconcilerOf(t, s)
	ctx := t.Context()
	prefix := unique("list") + "-"
	// Long ago, so that the runs of other subtests, created now, are not
	// in range.
	base := baseTime().Add(-1000 * time.Hour)
	createdBefore := base.Add(5 * time.Second)
	created := []time.Duration{ // by run index
		0,
		time.Second,
		2 * time.Second,
		3 * time.Second,
		5*time.Second - time.Millisecond, // just before createdBefore
		5 * time.Second,                  // at createdBefore
		6 * time.Second,                  // after it
	}
	id := func(i int) string { return fmt.Sprint(prefix, i) }
	for _, i := range []int{3, 0, 6, 4, 1, 5, 2} { // not in creation order
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{
			RunID: id(i), BlueprintID: "bp", BlueprintVersion: "v1", CreatedAt: base.Add(created[i]),
		}, map[string]any{"i": i}))
	}
	require.NoError(t, s.FinishRun(ctx, id(2), store.StatusCompleted, "", "", baseTime()))
	want := []string{id(0), id(1), id(3), id(4)}

	for _, limit := range []int{1, 2, 3, 0, 1000} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				all, ok := listAll(c, ctx, r, createdBefore, limit)
				if !ok {
					return
				}
				assert.Equal(c, want, own(all, prefix))
				for _, run := range all {
					if !strings.HasPrefix(run.RunID, prefix) {
						continue
					}
					i, err := strconv.Atoi(strings.TrimPrefix(run.RunID, prefix))
					if !assert.NoError(c, err) {
						continue
					}
					assert.Equal(c, "bp", run.BlueprintID)
					assert.Equal(c, "v1", run.BlueprintVersion)
					assert.True(c, run.FinishedAt.IsZero(), "FinishedAt of a running run")
					assert.WithinDuration(c, base.Add(created[i]), run.CreatedAt, time.Millisecond, run.RunID)
				}
			}, eventually, eventuallyTick)
		})
	}

	// The records are the caller's.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		all, ok := listAll(c, ctx, r, createdBefore, 0)
		if ok && assert.Contains(c, own(all, prefix), id(0)) {
			for i := range all {
				all[i].Status = store.StatusFailed
			}
		}
	}, eventually, eventuallyTick)
	got, err := s.GetRun(ctx, id(0))
	require.NoError(t, err)
	assert.Equal(t, store.StatusRunning, got.Status)

	// Nothing created before the first run.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		all, ok := listAll(c, ctx, r, base, 2)
		if ok {
			assert.Empty(c, own(all, prefix))
		}
	}, eventually, eventuallyTick)

	// Finishing every run empties the listing.
	for _, i := range []int{0, 1, 3, 4, 5, 6} {
		require.NoError(t, s.FinishRun(ctx, id(i), store.StatusCancelled, "", "", baseTime()))
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		all, ok := listAll(c, ctx, r, base.Add(time.Hour), 3)
		if ok {
			assert.Empty(c, own(all, prefix))
		}
	}, eventually, eventuallyTick)
}

// testListRunningCursor continues a listing after the run its cursor stopped
// at finished, and refuses cursors it did not make.
func testListRunningCursor(t *testing.T, s store.ContextStore) {
	r := reconcilerOf(t, s)
	ctx := t.Context()
	prefix := unique("cursor") + "-"
	base := baseTime().Add(-2000 * time.Hour)
	createdBefore := base.Add(time.Hour)
	id := func(i int) string { return fmt.Sprint(prefix, i) }
	for i := range 5 {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{
			RunID: id(i), BlueprintID: "bp", CreatedAt: base.Add(time.Duration(i) * time.Minute),
		}, nil))
	}

	// Page one run at a time up to run 1, then finish it and run 3.
	var cursor string
	var seen []string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		cursor, seen = "", nil
		for range 500 {
			runs, next, err := r.ListRunning(ctx, createdBefore, cursor, 1)
			if !assert.NoError(c, err) {
				return
			}
			seen = append(seen, own(runs, prefix)...)
			if !assert.NotEmpty(c, next, "the listing ended before run 1") {
				return
			}
			cursor = next
			if slices.Contains(seen, id(1)) {
				break
			}
		}
		assert.Equal(c, []string{id(0), id(1)}, seen)
	}, eventually, eventuallyTick)
	require.NoError(t, s.FinishRun(ctx, id(1), store.StatusCompleted, "", "", baseTime()))
	require.NoError(t, s.FinishRun(ctx, id(3), store.StatusFailed, "boom", "n", baseTime()))

	// The cursor still continues after run 1, without run 3.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		rest := seen
		next := cursor
		for page := 0; next != ""; page++ {
			if !assert.Less(c, page, 500, "too many pages") {
				return
			}
			runs, n, err := r.ListRunning(ctx, createdBefore, next, 1)
			if !assert.NoError(c, err) {
				return
			}
			rest = append(rest, own(runs, prefix)...)
			next = n
		}
		assert.Equal(c, []string{id(0), id(1), id(2), id(4)}, rest)
	}, eventually, eventuallyTick)

	for _, bad := range []string{"not a cursor!", "e30", "eyJ4IjoxfQ", strings.Repeat("A", 40)} {
		runs, next, err := r.ListRunning(ctx, createdBefore, bad, 10)
		require.ErrorIs(t, err, store.ErrInvalidCursor, "cursor %q", bad)
		assert.Empty(t, runs)
		assert.Empty(t, next)
	}
}

// testListRunningSpread lists many runs, several created in the same
// millisecond, which a store may keep apart (DynamoDbContext shards its
// index by run id): every listing is oldest first and holds each run once,
// whatever its page size, and a cursor continues across pages while other
// runs finish and start.
func testListRunningSpread(t *testing.T, s store.ContextStore) {
	r := reconcilerOf(t, s)
	ctx := t.Context()
	prefix := unique("spread") + "-"
	base := baseTime().Add(-3000 * time.Hour)
	createdBefore := base.Add(time.Hour)
	const n = 48
	id := func(i int) string { return fmt.Sprint(prefix, i) }
	created := func(i int) time.Time { return base.Add(time.Duration(i%7) * time.Millisecond) } // 7 per millisecond
	for i := range n {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: id(i), BlueprintID: "bp", CreatedAt: created(i)}, nil))
	}
	finished := map[int]bool{3: true, 10: true, 17: true, 40: true}
	for i := range finished {
		require.NoError(t, s.FinishRun(ctx, id(i), store.StatusCompleted, "", "", baseTime()))
	}
	var want []string
	for i := range n {
		if !finished[i] {
			want = append(want, id(i))
		}
	}
	createdOf := func(c *assert.CollectT, ids []string) []time.Time {
		var out []time.Time
		for _, runID := range ids {
			i, err := strconv.Atoi(strings.TrimPrefix(runID, prefix))
			if assert.NoError(c, err) {
				out = append(out, created(i))
			}
		}
		return out
	}
	// Listing every running run of a shared table a page of one at a time
	// takes a Query per shard per run: on a loaded machine one pass can
	// outlast eventually.
	const listAllEventually = time.Minute
	for _, limit := range []int{1, 5, 16, 0} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				all, ok := listAll(c, ctx, r, createdBefore, limit)
				if !ok {
					return
				}
				got := own(all, prefix)
				assert.ElementsMatch(c, want, got, "each running run once")
				assert.True(c, slices.IsSortedFunc(createdOf(c, got), time.Time.Compare), "oldest first: %v", got)
			}, listAllEventually, eventuallyTick)
		})
	}

	// Page 4 runs at a time; after the first page, runs not yet listed
	// finish and new runs start.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		all, ok := listAll(c, ctx, r, createdBefore, 0)
		if ok {
			assert.Len(c, own(all, prefix), len(want))
		}
	}, eventually, eventuallyTick)
	var first []string
	var cursor string
	for range 500 {
		runs, next, err := r.ListRunning(ctx, createdBefore, cursor, 4)
		require.NoError(t, err)
		first = append(first, own(runs, prefix)...)
		require.NotEmpty(t, next, "the listing ended after %v", first)
		cursor = next
		if len(first) >= 4 {
			break
		}
	}
	var gone []string
	for _, runID := range want {
		if !slices.Contains(first, runID) && len(gone) < 3 {
			gone = append(gone, runID)
			require.NoError(t, s.FinishRun(ctx, runID, store.StatusCancelled, "", "", baseTime()))
		}
	}
	for i := range 3 {
		require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: fmt.Sprint(prefix, "late-", i), BlueprintID: "bp", CreatedAt: base.Add(time.Minute)}, nil))
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got := slices.Clone(first)
		next := cursor
		for page := 0; next != ""; page++ {
			if !assert.Less(c, page, 500, "too many pages") {
				return
			}
			runs, n, err := r.ListRunning(ctx, createdBefore, next, 4)
			if !assert.NoError(c, err) {
				return
			}
			got = append(got, own(runs, prefix)...)
			next = n
		}
		var early []string // the runs created before the listing began
		for _, runID := range got {
			if !strings.HasPrefix(runID, prefix+"late-") {
				early = append(early, runID)
			}
		}
		var stayed []string
		for _, runID := range want {
			if !slices.Contains(gone, runID) || slices.Contains(first, runID) {
				stayed = append(stayed, runID)
			}
		}
		assert.ElementsMatch(c, stayed, early, "neither repeated nor skipped")
	}, eventually, eventuallyTick)
}

func testListNodes(t *testing.T, s store.ContextStore) {
	r := reconcilerOf(t, s)
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: runID, BlueprintID: "bp", CreatedAt: now},
		map[string]any{"input": "x", "_outputs": "not a node", "_outputsx": 1, "_outputr": 2, "zz": true}))
	require.NoError(t, s.Patch(ctx, runID, map[string]any{"a": 1, "_outputt": 3}, nil))

	_, err := s.AcquireNode(ctx, runID, "pending", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "pending", "w1", now.Add(2*time.Hour), now.Add(time.Second))
	require.NoError(t, err)
	_, err = s.AcquireNode(ctx, runID, "released", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)
	require.NoError(t, s.ReleaseLease(ctx, runID, "released", "w1"))
	_, err = s.AcquireNode(ctx, runID, "committed", "w2", now.Add(time.Hour), now)
	require.NoError(t, err)
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{
		NodeID: "committed", Output: map[string]any{"total": 3}, Action: "go", Taken: []string{"next"},
		Staged: map[string]any{"next": "in"}, Fallback: "fb", Sets: map[string]any{"b": 2},
	})
	require.NoError(t, err)
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
	_, err = s.AcquireNode(ctx, runID, "closed", "w3", now.Add(time.Hour), now)
	require.NoError(t, err)
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed", "closed-unstarted"}))
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "dotted.id", Output: nil})
	require.NoError(t, err)
	// Another run's node.
	_, err = s.AcquireNode(ctx, unique("run"), "pending", "w1", now.Add(time.Hour), now)
	require.NoError(t, err)

	recs, err := r.ListNodes(ctx, runID)
	require.NoError(t, err)
	ids := []string{"pending", "released", "committed", "skipped", "closed", "closed-unstarted", "dotted.id"}
	assert.ElementsMatch(t, ids, slices.Collect(maps.Keys(recs)), "every node record, and nothing else")

	byGet, err := s.GetNodes(ctx, runID, ids)
	require.NoError(t, err)
	for _, id := range ids {
		require.Contains(t, recs, id)
		assertNodeRecord(t, byGet[id], recs[id])
		assertTime(t, byGet[id].UpdatedAt, recs[id].UpdatedAt, id)
		assert.False(t, recs[id].UpdatedAt.IsZero(), "UpdatedAt of %s", id)
	}

	assertNodeRecord(t, &store.NodeRecord{NodeID: "pending", State: store.NodePending, Attempts: 2,
		LeaseOwner: "w1", LeaseUntil: now.Add(2 * time.Hour)}, recs["pending"])
	assertNodeRecord(t, &store.NodeRecord{NodeID: "released", State: store.NodePending, Attempts: 1}, recs["released"])
	assertNodeRecord(t, &store.NodeRecord{NodeID: "committed", State: store.NodeCommitted, Attempts: 1,
		Output: map[string]any{"total": int64(3)}, Action: "go", Taken: []string{"next"},
		Staged: map[string]any{"next": "in"}, Fallback: "fb"}, recs["committed"])
	assertNodeRecord(t, &store.NodeRecord{NodeID: "skipped", State: store.NodeSkipped}, recs["skipped"])
	assertNodeRecord(t, &store.NodeRecord{NodeID: "closed", State: store.NodeClosed, Attempts: 1}, recs["closed"])
	assertNodeRecord(t, &store.NodeRecord{NodeID: "closed-unstarted", State: store.NodeClosed}, recs["closed-unstarted"])
	assertNodeRecord(t, &store.NodeRecord{NodeID: "dotted.id", State: store.NodeCommitted}, recs["dotted.id"])

	// The records are the caller's.
	recs["committed"].Output.(map[string]any)["total"] = "changed"
	recs["committed"].Taken[0] = "changed"
	again, err := r.ListNodes(ctx, runID)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"total": int64(3)}, again["committed"].Output)
	assert.Equal(t, []string{"next"}, again["committed"].Taken)

	// A run without node records, and an unknown run.
	other := unique("run")
	require.NoError(t, s.CreateRun(ctx, store.RunRecord{RunID: other, BlueprintID: "bp", CreatedAt: now}, map[string]any{"k": "v"}))
	for _, runID := range []string{other, unique("missing")} {
		recs, err := r.ListNodes(ctx, runID)
		require.NoError(t, err)
		assert.Empty(t, recs)
	}
}

// testListNodesMany lists more node records than one DynamoDB page holds.
func testListNodesMany(t *testing.T, s store.ContextStore) {
	r := reconcilerOf(t, s)
	ctx := t.Context()
	runID := unique("run")
	const nodes = 12
	// About 300 KB each: a DynamoDB Query page holds at most 1 MB.
	big := strings.Repeat("x", 300*1024)
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%02d", i)
		_, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: ids[i], Output: big})
		require.NoError(t, err)
	}
	recs, err := r.ListNodes(ctx, runID)
	require.NoError(t, err)
	assert.ElementsMatch(t, ids, slices.Collect(maps.Keys(recs)))
	for _, id := range ids {
		if assert.Contains(t, recs, id) {
			assert.Equal(t, store.NodeCommitted, recs[id].State)
			assert.Len(t, recs[id].Output, len(big), id)
		}
	}
}

// testUpdatedAt checks that every write of a node record sets UpdatedAt to
// the time of the write, that it never goes backwards, and that a call that
// changes nothing leaves it.
func testUpdatedAt(t *testing.T, s store.ContextStore) {
	ctx := t.Context()
	runID := unique("run")
	now := baseTime()

	// during runs fn and checks that the record of node was written during it.
	var last time.Time
	during := func(node string, fn func() *store.NodeRecord) time.Time {
		t.Helper()
		time.Sleep(2 * time.Millisecond) // a later millisecond than the last write
		start := time.Now().Truncate(time.Millisecond)
		returned := fn()
		end := time.Now()
		recs, err := s.GetNodes(ctx, runID, []string{node})
		require.NoError(t, err)
		require.Contains(t, recs, node)
		got := recs[node].UpdatedAt
		require.False(t, got.IsZero(), "UpdatedAt of %s", node)
		assert.False(t, got.Before(start), "UpdatedAt %v of %s is before the write began at %v", got, node, start)
		assert.False(t, got.After(end), "UpdatedAt %v of %s is after the write ended at %v", got, node, end)
		if returned != nil {
			assertTime(t, got, returned.UpdatedAt, "the record returned by the write")
		}
		return got
	}

	// Acquire → Extend → Commit: forward every time.
	last = during("n", func() *store.NodeRecord {
		rec, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(time.Minute), now)
		require.NoError(t, err)
		return rec
	})
	for _, step := range []struct {
		name string
		fn   func() *store.NodeRecord
	}{
		{"acquire again", func() *store.NodeRecord {
			rec, err := s.AcquireNode(ctx, runID, "n", "w1", now.Add(2*time.Minute), now)
			require.NoError(t, err)
			return rec
		}},
		{"extend", func() *store.NodeRecord {
			require.NoError(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(3*time.Minute)))
			return nil
		}},
		{"extend again", func() *store.NodeRecord {
			require.NoError(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(4*time.Minute)))
			return nil
		}},
		{"commit", func() *store.NodeRecord {
			rec, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "out", Sets: map[string]any{"k": 1}})
			require.NoError(t, err)
			return rec
		}},
	} {
		got := during("n", step.fn)
		assert.False(t, got.Before(last), "%s: UpdatedAt went back from %v to %v", step.name, last, got)
		last = got
	}

	// Calls that change nothing leave it.
	time.Sleep(2 * time.Millisecond)
	rec, err := s.AcquireNode(ctx, runID, "n", "w2", now.Add(time.Hour), now.Add(time.Hour))
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	require.NotNil(t, rec)
	assertTime(t, last, rec.UpdatedAt, "the record returned with a refusal")
	require.ErrorIs(t, s.ExtendLease(ctx, runID, "n", "w1", now.Add(time.Hour)), store.ErrLeaseLost)
	require.NoError(t, s.ReleaseLease(ctx, runID, "n", "w1"))
	require.NoError(t, s.SkipNodes(ctx, runID, []string{"n"}))
	require.NoError(t, s.CloseNodes(ctx, runID, []string{"n"}))
	_, err = s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "n", Output: "again"})
	require.ErrorIs(t, err, store.ErrNodeCommitted)
	recs, err := s.GetNodes(ctx, runID, []string{"n"})
	require.NoError(t, err)
	assertTime(t, last, recs["n"].UpdatedAt, "refused writes change nothing")

	// Release, skip and close set it too.
	_, err = s.AcquireNode(ctx, runID, "released", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	during("released", func() *store.NodeRecord {
		require.NoError(t, s.ReleaseLease(ctx, runID, "released", "w1"))
		return nil
	})
	_, err = s.AcquireNode(ctx, runID, "skipped", "w1", now.Add(time.Minute), now)
	require.NoError(t, err)
	during("skipped", func() *store.NodeRecord {
		require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped"}))
		return nil
	})
	during("skipped-unstarted", func() *store.NodeRecord {
		require.NoError(t, s.SkipNodes(ctx, runID, []string{"skipped-unstarted"}))
		return nil
	})
	during("closed", func() *store.NodeRecord {
		require.NoError(t, s.CloseNodes(ctx, runID, []string{"closed"}))
		return nil
	})
	during("committed-unstarted", func() *store.NodeRecord {
		rec, err := s.CommitNode(ctx, runID, store.NodeCommit{NodeID: "committed-unstarted", Output: 1})
		require.NoError(t, err)
		return rec
	})
}

// testReconcileCanceled checks that the reconciler's reads honour a
// cancelled ctx.
func testReconcileCanceled(t *testing.T, s store.ContextStore) {
	r := reconcilerOf(t, s)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, _, err := r.ListRunning(ctx, baseTime(), "", 10)
	assert.ErrorIs(t, err, context.Canceled, "ListRunning")
	_, err = r.ListNodes(ctx, unique("run"))
	assert.ErrorIs(t, err, context.Canceled, "ListNodes")
}
