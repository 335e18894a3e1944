package sqsadapter_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/store"
)

// testRetention is the Tuning.Retention of the retention tests.
const testRetention = 2 * time.Hour

// wantExpiry is the expiry of the items of a run that finished at
// finishedAt: the finish time as the store keeps it (to the millisecond),
// plus the retention, in DynamoDB's epoch seconds rounded up.
func wantExpiry(finishedAt time.Time, retention time.Duration) time.Time {
	at := finishedAt.Truncate(time.Millisecond).Add(retention)
	sec := at.Unix()
	if at.After(time.Unix(sec, 0)) {
		sec++
	}
	return time.Unix(sec, 0)
}

// retentionBlueprints are a run with a join, a fallback and several nodes
// that completes, a run that fails, and a run that blocks (to be cancelled).
func retentionBlueprints(t *testing.T) []*sqsadapter.Blueprint {
	return []*sqsadapter.Blueprint{
		flow(t, "joins",
			ids("s", "a", "b", "j", fnode("p", `"config":{"maxRetries":1,"fallback":"fb"}`), "fb", "d"),
			"s>a", "s>b", "a>j", "b>j", "j>p", "p>d"),
		flow(t, "fails", ids("s", fnode("x", `"config":{"maxRetries":2}`), "y"), "s>x", "x>y"),
		flow(t, "blocks", ids("s", "blocked", "after"), "s>blocked", "blocked>after"),
	}
}

func retentionNodes(release, started *gate) map[string]sqsadapter.NodeFunc {
	return map[string]sqsadapter.NodeFunc{
		"p":       failWith("primary broke"),
		"fb":      output(map[string]any{"recovered": true}, ""),
		"x":       failWith("x broke"),
		"blocked": blockUntil(release, started),
	}
}

// clock is a store clock that a test moves forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestRetention: with Tuning.Retention, every item of a finished run —
// completed, failed or cancelled — carries the expiry finish+Retention,
// the run record last; past it the run reads as absent everywhere.
func TestRetention(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	release, started := newGate(), newGate()
	openAtEnd(t, release)
	r := newRig(t, rigConfig{
		nodes: retentionNodes(release, started),
		opts:  []sqsadapter.Option{sqsadapter.WithTuning(sqsadapter.Tuning{Retention: testRetention})},
		setup: func(e *env) { e.contexts.Now = clk.now },
	}, retentionBlueprints(t)...)

	// expired waits until the run record carries its expiry (ExpireRun
	// writes it last, after the status), then checks every item of the run.
	expired := func(id string) time.Time {
		t.Helper()
		st := r.status(id)
		require.True(t, st.Finished())
		want := wantExpiry(st.FinishedAt, testRetention)
		eventually(t, func() bool {
			run, _ := r.contexts.Expiries(id)
			return run.Equal(want)
		}, "the run record of "+id+" gets its expiry")
		_, items := r.contexts.Expiries(id)
		require.NotEmpty(t, items)
		for key, exp := range items {
			assert.True(t, exp.Equal(want), "run %s item %q expires at %v, want %v", id, key, exp, want)
		}
		return want
	}

	completed := r.start("joins", map[string]any{"order": 7})
	requireStatus(t, sqsadapter.StatusCompleted, r.wait(completed))
	exp := expired(completed)
	_, items := r.contexts.Expiries(completed)
	assert.Contains(t, items, "order", "context keys expire")
	assert.Contains(t, items, "_outputs.j", "node records expire")

	failed := r.start("fails", nil)
	requireStatus(t, sqsadapter.StatusFailed, r.wait(failed))
	expired(failed)

	cancelled := r.start("blocks", nil)
	started.await(t, "the blocking node to start")
	require.NoError(t, r.client.CancelRun(t.Context(), cancelled, "stop"))
	release.open()
	requireStatus(t, sqsadapter.StatusCancelled, r.wait(cancelled))
	expired(cancelled)
	eventually(t, r.queueEmpty, "every message is handled")

	// Until the expiry the runs read as they are; from it on they are absent.
	clk.advance(time.Until(exp) - time.Minute)
	requireStatus(t, sqsadapter.StatusCompleted, r.status(completed))
	clk.advance(testRetention)
	for _, id := range []string{completed, failed, cancelled} {
		_, err := r.client.GetRun(t.Context(), id)
		require.ErrorIs(t, err, sqsadapter.ErrRunNotFound, id)
		_, err = r.client.WaitForRun(t.Context(), id)
		require.ErrorIs(t, err, sqsadapter.ErrRunNotFound, id)
		require.ErrorIs(t, r.client.CancelRun(t.Context(), id, ""), sqsadapter.ErrRunNotFound, id)
		require.ErrorIs(t, r.client.DeleteRun(t.Context(), id), sqsadapter.ErrRunNotFound, id)
	}
	// An expired run's id is not taken for a new run while its items are
	// stored: the new run would find the old node records.
	_, err := r.client.StartRun(t.Context(), "joins", nil, sqsadapter.WithRunID(completed))
	require.ErrorIs(t, err, store.ErrRunExists)
	assert.Contains(t, err.Error(), "deleted or has expired")
	st, err := r.client.Reconcile(t.Context(), time.Millisecond)
	require.NoError(t, err)
	assert.Zero(t, st.Errors)
}

// TestRetentionOff: without Tuning.Retention nothing expires and no
// request is made for it.
func TestRetentionOff(t *testing.T) {
	t.Parallel()
	release, started := newGate(), newGate()
	openAtEnd(t, release)
	r := newRig(t, rigConfig{nodes: retentionNodes(release, started)}, retentionBlueprints(t)...)
	ids := []string{r.start("joins", nil), r.start("fails", nil)}
	cancelled := r.start("blocks", nil)
	started.await(t, "the blocking node to start")
	require.NoError(t, r.client.CancelRun(t.Context(), cancelled, "stop"))
	release.open()
	for _, id := range append(ids, cancelled) {
		r.wait(id)
	}
	eventually(t, r.queueEmpty, "every message is handled")
	for _, id := range append(ids, cancelled) {
		run, items := r.contexts.Expiries(id)
		assert.True(t, run.IsZero(), "run %s expires", id)
		for key, exp := range items {
			assert.True(t, exp.IsZero(), "run %s item %q expires", id, key)
		}
	}
	assert.Zero(t, r.contexts.Calls()["ExpireRun"], "ExpireRun called without a retention")
}

// TestDeleteRun: a running run is refused, a finished one deleted with
// every item, and a missing or deleted run is not found.
func TestDeleteRun(t *testing.T) {
	t.Parallel()
	release, started := newGate(), newGate()
	openAtEnd(t, release)
	r := newRig(t, rigConfig{nodes: retentionNodes(release, started)}, retentionBlueprints(t)...)
	ctx := t.Context()

	running := r.start("blocks", nil)
	started.await(t, "the blocking node to start")
	err := r.client.DeleteRun(ctx, running)
	require.ErrorIs(t, err, store.ErrRunNotFinished)
	assert.Contains(t, err.Error(), running, "the error names the run")
	requireStatus(t, sqsadapter.StatusRunning, r.status(running))
	release.open()
	r.wait(running)

	done := r.start("joins", map[string]any{"order": 1})
	r.wait(done)
	eventually(t, r.queueEmpty, "every message is handled")
	for _, id := range []string{running, done} {
		before := time.Now()
		require.NoError(t, r.client.DeleteRun(ctx, id))
		_, err := r.client.GetRun(ctx, id)
		require.ErrorIs(t, err, sqsadapter.ErrRunNotFound)
		// What stays: a tombstone per node record, closed and empty, and
		// the run record's, all expiring after SQS's longest retention.
		runExp, items := r.contexts.Expiries(id)
		assert.True(t, runExp.After(before.Add(14*24*time.Hour)), "run tombstone of %s expires at %v", id, runExp)
		require.NotEmpty(t, items)
		for k, exp := range items {
			assert.True(t, strings.HasPrefix(k, "_outputs."), "item %q of run %s left", k, id)
			assert.True(t, exp.After(before.Add(14*24*time.Hour)), "tombstone %q of run %s expires at %v", k, id, exp)
		}
		snap, err := r.contexts.Snapshot(ctx, id)
		require.NoError(t, err)
		assert.Empty(t, snap, "no value of run %s is left", id)
		require.ErrorIs(t, r.client.DeleteRun(ctx, id), sqsadapter.ErrRunNotFound, "a repeated DeleteRun")
		// Its id is not reused while the tombstone lasts.
		_, err = r.client.StartRun(ctx, "joins", nil, sqsadapter.WithRunID(id))
		require.ErrorIs(t, err, store.ErrRunExists)
		assert.Contains(t, err.Error(), "deleted or has expired")
	}
	// A late job of the deleted run (a redelivery of the job that
	// completed it, say) is dropped: its node does not run again.
	calls := r.log.count("d")
	require.Positive(t, calls)
	_, err = r.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &r.queue,
		MessageBody: aws.String(`{"runId":"` + done + `","blueprintId":"joins","nodeId":"d"}`)})
	require.NoError(t, err)
	eventually(t, r.queueEmpty, "the late job is handled")
	assert.Equal(t, calls, r.log.count("d"), "the late job ran its node again")
	require.ErrorIs(t, r.client.DeleteRun(ctx, "no-such-run"), sqsadapter.ErrRunNotFound)
}

// TestDeleteChildRunWhileParentRuns: a subflow's child run is not deleted
// while its parent runs, since the parent reads its end from it (deleted,
// it would be started again); once the parent finished, it is.
func TestDeleteChildRunWhileParentRuns(t *testing.T) {
	t.Parallel()
	release, started := newGate(), newGate()
	openAtEnd(t, release)
	parent := mustParse(t, `{"id": "parent", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}},
		{"id": "blocked", "uses": "n"}], "edges": [{"source": "sub", "target": "blocked"}]}`)
	child := mustParse(t, `{"id": "child", "nodes": [{"id": "c1", "uses": "n"}]}`)
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"blocked": blockUntil(release, started)}}, parent, child)
	ctx := t.Context()
	id := r.start("parent", nil)
	started.await(t, "the parent's node after the subflow")
	children := r.status(id).Children
	require.Len(t, children, 1)
	childID := children[0]
	requireStatus(t, sqsadapter.StatusCompleted, r.status(childID))
	err := r.client.DeleteRun(ctx, childID)
	require.ErrorIs(t, err, store.ErrRunNotFinished)
	assert.Contains(t, err.Error(), id, "the error names the parent")
	release.open()
	r.wait(id)
	require.NoError(t, r.client.DeleteRun(ctx, childID))
	assert.Equal(t, 1, r.log.count("c1"))
}

// TestRetentionLateJobOfExpiredChild: a job of an expired child run
// delivered late replays to the end without an error: the parent it would
// tell, and the expiry it would set, are behind it.
func TestRetentionLateJobOfExpiredChild(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	parent := mustParse(t, `{"id": "parent", "nodes": [{"id": "a", "uses": "n"},
		{"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}}],
	  "edges": [{"source": "a", "target": "sub"}]}`)
	r := newRig(t, rigConfig{
		opts:  []sqsadapter.Option{sqsadapter.WithTuning(sqsadapter.Tuning{Retention: testRetention})},
		setup: func(e *env) { e.contexts.Now = clk.now },
	}, parent, childBlueprint(t))
	id := r.start("parent", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	childID := "subflow:" + id + ":sub:1"
	child := r.status(childID)
	eventually(t, func() bool {
		run, _ := r.contexts.Expiries(id)
		return !run.IsZero()
	}, "the parent run gets its expiry")
	eventually(t, r.queueEmpty, "every message is handled")
	childRun, _ := r.contexts.Expiries(childID)
	assert.True(t, childRun.Equal(wantExpiry(child.FinishedAt, testRetention)), "the child run expires on its own: %v", childRun)

	clk.advance(testRetention + time.Minute)
	job := sqsadapter.Job{RunID: childID, BlueprintID: "child", BlueprintVersion: child.BlueprintVersion, NodeID: "c2"}
	require.NoError(t, r.client.HandleJob(t.Context(), job), "a late job of an expired child run")
	_, err := r.client.GetRun(t.Context(), childID)
	require.True(t, errors.Is(err, sqsadapter.ErrRunNotFound), "%v", err)
}

// TestRetentionCrashBeforeExpiry: a worker that dies after writing the
// final status and before the expiry (crash point "expire") leaves its
// message, whose redelivery replays to the expiry — for a completed and for
// a failed run.
func TestRetentionCrashBeforeExpiry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ bp, node string }{{"joins", "d"}, {"fails", "x"}} {
		t.Run(tc.bp, func(t *testing.T) {
			t.Parallel()
			var crashes atomic.Int32
			crash := sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
				return step == "expire" && job.NodeID == tc.node && crashes.Add(1) == 1
			})
			r := newRig(t, rigConfig{
				nodes: retentionNodes(newGate(), nil),
				opts:  []sqsadapter.Option{crash, sqsadapter.WithTuning(sqsadapter.Tuning{Retention: testRetention})},
			}, retentionBlueprints(t)...)
			id := r.start(tc.bp, nil)
			st := r.wait(id)
			eventually(t, func() bool { return crashes.Load() >= 2 }, "the redelivered job reaches the expiry again")
			want := wantExpiry(st.FinishedAt, testRetention)
			eventually(t, func() bool {
				run, _ := r.contexts.Expiries(id)
				return run.Equal(want)
			}, "the replay sets the expiry")
			_, items := r.contexts.Expiries(id)
			for key, exp := range items {
				assert.True(t, exp.Equal(want), "item %q expires at %v, want %v", key, exp, want)
			}
		})
	}
}

// TestRetentionReconcilerCompletes: a run completed by the reconciler (the
// job that skipped its leaf died before completing it, its message lost)
// gets its expiry too.
func TestRetentionReconcilerCompletes(t *testing.T) {
	t.Parallel()
	var crashed atomic.Bool
	crash := sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
		return step == "complete" && crashed.CompareAndSwap(false, true)
	})
	r := newRig(t, rigConfig{
		workers: 1,
		opts:    []sqsadapter.Option{crash, sqsadapter.WithTuning(sqsadapter.Tuning{Retention: testRetention})},
	}, flow(t, "ab", nil, fedge("a", "b", "condition", "false")))
	id := r.start("ab", nil)
	eventually(t, crashed.Load, "the last job dies before completing the run")
	r.sqs.Purge(r.queue) // its message is lost
	requireStatus(t, sqsadapter.StatusRunning, r.status(id))
	// Once the dead job's lease has expired, a pass completes the run.
	eventually(t, func() bool {
		stats, err := r.client.Reconcile(t.Context(), time.Millisecond)
		require.NoError(t, err)
		require.Zero(t, stats.Errors)
		require.Zero(t, stats.Jobs, "nothing is left to run")
		return stats.Stalled > 0
	}, "the reconciler finds the run stalled")
	st := r.status(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	want := wantExpiry(st.FinishedAt, testRetention)
	run, items := r.contexts.Expiries(id)
	assert.True(t, run.Equal(want), "the run record expires at %v, want %v", run, want)
	for key, exp := range items {
		assert.True(t, exp.Equal(want), "item %q expires at %v, want %v", key, exp, want)
	}
}

// rawTTLs reads, with the SDK, the ttl attribute of every item of a run in
// the context table (by key; 0 when absent) and of its run record (ok false
// when there is no record), as DynamoDB holds them.
func (e *itEnv) rawTTLs(runID string) (run int64, ok bool, items map[string]int64) {
	e.t.Helper()
	ctx := e.t.Context()
	num := func(item map[string]types.AttributeValue) int64 {
		n, isN := item["ttl"].(*types.AttributeValueMemberN)
		if !isN {
			return 0
		}
		v, err := strconv.ParseInt(n.Value, 10, 64)
		require.NoError(e.t, err)
		return v
	}
	items = map[string]int64{}
	pages := dynamodb.NewQueryPaginator(e.ddb, &dynamodb.QueryInput{
		TableName:                 aws.String(e.tables.Context),
		KeyConditionExpression:    aws.String("runId = :r"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":r": &types.AttributeValueMemberS{Value: runID}},
		ConsistentRead:            aws.Bool(true),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		require.NoError(e.t, err)
		for _, item := range page.Items {
			items[item["key"].(*types.AttributeValueMemberS).Value] = num(item)
		}
	}
	out, err := e.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(e.tables.Status),
		Key:            map[string]types.AttributeValue{"runId": &types.AttributeValueMemberS{Value: runID}},
		ConsistentRead: aws.Bool(true),
	})
	require.NoError(e.t, err)
	if len(out.Item) == 0 {
		return 0, false, items
	}
	return num(out.Item), true, items
}

// TestIntegrationRetention: on DynamoDB, every item of a finished run —
// completed, failed or cancelled — and its run record carry the TTL
// attribute ttl = finish + Retention in epoch seconds; without a retention
// none does. DeleteRun leaves only tombstones: node records closed and
// empty, and the run record's, expiring after SQS's longest retention.
func TestIntegrationRetention(t *testing.T) {
	t.Parallel()
	for _, retention := range []time.Duration{testRetention, 0} {
		t.Run(fmt.Sprint(retention), func(t *testing.T) {
			t.Parallel()
			release, started := newGate(), newGate()
			openAtEnd(t, release)
			r := newItRig(t, itRigConfig{
				nodes: retentionNodes(release, started),
				opts:  []sqsadapter.Option{sqsadapter.WithTuning(sqsadapter.Tuning{Retention: retention})},
			}, retentionBlueprints(t)...)
			completed := r.start("joins", map[string]any{"order": 7})
			failed := r.start("fails", nil)
			cancelled := r.start("blocks", nil)
			started.await(t, "the blocking node to start")
			require.NoError(t, r.client.CancelRun(t.Context(), cancelled, "stop"))
			release.open()
			requireStatus(t, sqsadapter.StatusCompleted, r.wait(completed))
			requireStatus(t, sqsadapter.StatusFailed, r.wait(failed))
			requireStatus(t, sqsadapter.StatusCancelled, r.wait(cancelled))
			for _, id := range []string{completed, failed, cancelled} {
				r.drained(id)
			}
			for _, id := range []string{completed, failed, cancelled} {
				st := r.status(id)
				var want int64
				if retention > 0 {
					want = wantExpiry(st.FinishedAt, retention).Unix()
				}
				run, ok, items := r.rawTTLs(id)
				require.True(t, ok)
				assert.Equal(t, want, run, "ttl of the run record of %s", id)
				require.NotEmpty(t, items)
				for key, ttl := range items {
					assert.Equal(t, want, ttl, "ttl of item %q of run %s", key, id)
				}
				if id == completed {
					assert.Contains(t, items, "order")
					assert.Contains(t, items, "_outputs.j")
				}
			}

			floor := time.Now().Add(14 * 24 * time.Hour).Unix()
			require.NoError(t, r.client.DeleteRun(t.Context(), completed))
			run, ok, items := r.rawTTLs(completed)
			assert.True(t, ok, "the run record is a tombstone")
			assert.Greater(t, run, floor, "the run's tombstone outlives SQS's retention")
			require.NotEmpty(t, items)
			for k, ttl := range items {
				assert.True(t, strings.HasPrefix(k, "_outputs."), "item %q is left", k)
				assert.Greater(t, ttl, floor, "tombstone %q outlives SQS's retention", k)
			}
			snap, err := r.contexts.Snapshot(t.Context(), completed)
			require.NoError(t, err)
			assert.Empty(t, snap, "no value is left")
			nodes, err := r.contexts.ListNodes(t.Context(), completed)
			require.NoError(t, err)
			for id, n := range nodes {
				assert.Equal(t, store.NodeClosed, n.State, id)
				assert.Nil(t, n.Output, id)
			}
			require.ErrorIs(t, r.client.DeleteRun(t.Context(), completed), sqsadapter.ErrRunNotFound)
			_, err = r.client.GetRun(t.Context(), completed)
			require.ErrorIs(t, err, sqsadapter.ErrRunNotFound)
			_, ok, _ = r.rawTTLs(failed)
			assert.True(t, ok, "another run is kept")
		})
	}
}
