package sqsadapter_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// Minimal scenarios at the edges of the protocol's promises: each breaks one
// promise in the smallest way found. The randomized protocol test covers
// their kind; these pin the scenarios themselves.

var errInjected = errors.New("injected store fault")

// faultOnce fails the first n calls of op (before they take effect).
func faultOnce(op string, n int32) func(string) error {
	var seen atomic.Int32
	return func(o string) error {
		if o == op && seen.Add(1) <= n {
			return errInjected
		}
		return nil
	}
}

// drain handles every job in the queue with HandleJob (no poller) until
// the queue is empty, at most max jobs; it returns the jobs handled.
func (r *rig) drain(max int) []sqsadapter.Job {
	r.t.Helper()
	var handled []sqsadapter.Job
	for i := 0; i < max; i++ {
		out, err := r.sqs.ReceiveMessage(r.t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(r.queue), MaxNumberOfMessages: 1})
		require.NoError(r.t, err)
		if len(out.Messages) == 0 {
			if v, f, d := r.sqs.Len(r.queue); v+f+d == 0 {
				return handled
			}
			time.Sleep(unit)
			continue
		}
		m := out.Messages[0]
		job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
		require.NoError(r.t, err)
		handled = append(handled, job)
		if err := r.client.HandleJob(r.t.Context(), job); err != nil {
			r.t.Logf("job %v: %v", job, err)
			continue // left to reappear, as a poller would
		}
		_, err = r.sqs.DeleteMessage(r.t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(r.queue), ReceiptHandle: m.ReceiptHandle})
		require.NoError(r.t, err)
	}
	r.t.Fatalf("the queue was not drained after %d jobs", max)
	return nil
}

// A node named like the fallback's attempt record of another node runs as
// itself, and the fallback as the fallback.
func TestNodeNamedLikeFallbackRecord(t *testing.T) {
	t.Parallel()
	bp := flow(t, "names", ids(fnode("x", `"config":{"fallback":"fb"}`), "x@fallback", "fb", "end"), "x>end", "x@fallback>end")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"x": failWith("boom")}}, bp)
	st := r.wait(r.start("names", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"from": "fb"}, st.Context["_outputs.x"])
	assert.Equal(t, map[string]any{"from": "x@fallback"}, st.Context["_outputs.x@fallback"])
	assert.Equal(t, 1, r.log.count("x@fallback"))
	assert.Equal(t, 1, r.log.count("fb"))
}

// Run "r:x" with join "j" and run "r" with join "x:j" keep separate join
// records: neither join fires before its own predecessors arrive.
func TestJoinKeysOfDifferentRunsDoNotCollide(t *testing.T) {
	t.Parallel()
	one := flow(t, "one", ids("a", "b", "j"), "a>j", "b>j")
	two := flow(t, "two", ids("a", "b", "x:j"), "a>x:j", "b>x:j")
	r := newRig(t, rigConfig{noWorkers: true}, one, two)
	r.start("one", nil, sqsadapter.WithRunID("r:x"))
	r.start("two", nil, sqsadapter.WithRunID("r"))
	for _, j := range []sqsadapter.Job{
		{RunID: "r:x", BlueprintID: "one", NodeID: "a"},
		{RunID: "r", BlueprintID: "two", NodeID: "b"},
	} {
		require.NoError(t, r.client.HandleJob(t.Context(), j))
	}
	for _, m := range r.sqs.Messages(r.queue) {
		job, err := sqsadapter.DecodeJob([]byte(m.Body))
		require.NoError(t, err)
		assert.NotContains(t, []string{"j", "x:j"}, job.NodeID, "a join fired with one of its two predecessors")
	}
	r.drain(20)
	for _, c := range []struct{ run, join string }{{"r:x", "j"}, {"r", "x:j"}} {
		st := r.status(c.run)
		requireStatus(t, sqsadapter.StatusCompleted, st)
		assert.Equal(t, map[string]any{"a": map[string]any{"from": "a"}, "b": map[string]any{"from": "b"}},
			r.log.get(c.join)[0].Input, "input of %s in run %s", c.join, c.run)
	}
}

// A permanent failure whose FailNode call faults once fails the run: the
// redelivery must not take the failure for an abandoned attempt and run
// the fallback.
func TestPermanentFailureSurvivesStoreFault(t *testing.T) {
	t.Parallel()
	bp := flow(t, "perm", ids(fnode("f", `"config":{"fallback":"fb"}`), "fb"))
	r := newRig(t, rigConfig{
		nodes: map[string]sqsadapter.NodeFunc{"f": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("card declined"))
		}},
		setup: func(e *env) { e.contexts.BeforeCall = faultOnce("FailNode", 1) },
	}, bp)
	st := r.wait(r.start("perm", nil))
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Contains(t, st.Error, "card declined")
	assert.Zero(t, r.log.count("fb"), "the fallback ran after a permanent failure")
}

// At the default of one attempt, a transient store fault before the node
// function is entered, or before its commit takes effect, changes nothing.
func TestStoreFaultDoesNotConsumeAttempt(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"GetMany", "CommitNode", "AcquireNode"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "fault", ids("a", fnode("b", `"inputs":{"v":"a"}`)), "a>b")
			r := newRig(t, rigConfig{setup: func(e *env) { e.contexts.BeforeCall = faultOnce(op, 1) }}, bp)
			st := r.wait(r.start("fault", nil))
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, map[string]any{"v": map[string]any{"from": "a"}}, r.log.input(t, "b"))
		})
	}
}

// An acquisition whose write took effect but whose response was lost is
// not an attempt that never reported back.
func TestLostAcquireResponseDoesNotConsumeAttempt(t *testing.T) {
	t.Parallel()
	bp := flow(t, "lost", ids("a", "b"), "a>b")
	var seen atomic.Int32
	r := newRig(t, rigConfig{setup: func(e *env) {
		e.contexts.AfterCall = func(op string) error {
			if op == "AcquireNode" && seen.Add(1) == 2 {
				return errInjected
			}
			return nil
		}
	}}, bp)
	st := r.wait(r.start("lost", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
}

// Once a run is finished, no fallback of it starts: x fails right after
// CancelRun, or right after another node failed the run.
func TestNoFallbackAfterRunFinished(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"cancelled", "failed"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			started, release := newGate(), newGate()
			fns := map[string]sqsadapter.NodeFunc{
				"x": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
					started.open()
					<-release.done() // ignores ctx: it fails after the run finished
					return sqsadapter.NodeResult{}, errors.New("x failed")
				},
				"y": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
					if err := started.wait(ctx); err != nil {
						return sqsadapter.NodeResult{}, err
					}
					return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("y failed"))
				},
			}
			nodes := ids("s", fnode("x", `"config":{"fallback":"fb"}`), "fb")
			edges := []string{"s>x"}
			if how == "failed" {
				nodes, edges = append(nodes, "y"), append(edges, "s>y")
			}
			bp := flow(t, "late", nodes, edges...)
			r := newRig(t, rigConfig{nodes: fns}, bp)
			openAtEnd(t, release)
			id := r.start("late", nil)
			started.await(t, "x to start")
			if how == "cancelled" {
				require.NoError(t, r.client.CancelRun(t.Context(), id, "stop"))
			}
			st := r.wait(id)
			requireStatus(t, sqsadapter.RunState(how), st)
			release.open()
			eventually(t, r.queueEmpty, "the run's messages are settled")
			assert.Zero(t, r.log.count("fb"), "the fallback ran after its run finished")
			assert.Equal(t, sqsadapter.RunState(how), r.status(id).Status)
		})
	}
}

// The reconciler finishes a run whose leaves were all skipped, when the
// job that would have completed it crashed and its message was lost.
func TestReconcileCompletesRunWithSkippedLeaves(t *testing.T) {
	t.Parallel()
	var crashed atomic.Bool
	bp := flow(t, "dead", ids("s", "a"), fedge("s", "a", "condition", "false"))
	r := newRig(t, rigConfig{noWorkers: true, opts: []sqsadapter.Option{sqsadapter.WithCrashHook(func(step string, job sqsadapter.Job) bool {
		return step == "complete" && crashed.CompareAndSwap(false, true)
	})}}, bp)
	id := r.start("dead", nil)
	require.Error(t, r.client.HandleJob(t.Context(), sqsadapter.Job{RunID: id, BlueprintID: "dead", NodeID: "s"}))
	require.True(t, crashed.Load())
	r.sqs.Purge(r.queue)
	require.Equal(t, sqsadapter.StatusRunning, r.status(id).Status)
	time.Sleep(2 * time.Millisecond) // older than the threshold below
	stats, err := r.client.Reconcile(t.Context(), time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, 1, stats.Stalled)
	r.drain(10)
	requireStatus(t, sqsadapter.StatusCompleted, r.status(id))
	assert.Equal(t, 1, r.log.count("s"))
	assert.Zero(t, r.log.count("a"))
}

// Repeating StartRun with the same run id re-enqueues start jobs with the
// stored input, not the repeated call's.
func TestRepeatedStartRunKeepsFirstInput(t *testing.T) {
	t.Parallel()
	bp := flow(t, "again", ids("a"))
	r := newRig(t, rigConfig{noWorkers: true, setup: func(e *env) {
		var failed atomic.Bool
		e.sqs.BeforeCall = func(op, _ string) error {
			if (op == "SendMessage" || op == "SendMessageBatch") && failed.CompareAndSwap(false, true) {
				return errInjected
			}
			return nil
		}
	}}, bp)
	_, err := r.client.StartRun(t.Context(), "again", map[string]any{"_inputs.a": "first"}, sqsadapter.WithRunID("run-1"))
	require.Error(t, err)
	for _, again := range []map[string]any{{"_inputs.a": "second"}, nil} {
		_, err = r.client.StartRun(t.Context(), "again", again, sqsadapter.WithRunID("run-1"))
		require.NoError(t, err)
	}
	r.drain(10)
	st := r.status("run-1")
	requireStatus(t, sqsadapter.StatusCompleted, st)
	for _, c := range r.log.get("a") {
		assert.Equal(t, "first", c.Input)
	}
	assert.Equal(t, "first", st.Context["_inputs.a"])
}

// A job naming a registered blueprint other than its run's, and a node
// that blueprint lacks but the run has committed, does not panic and runs
// nothing.
func TestJobOfOtherBlueprintForCommittedNode(t *testing.T) {
	t.Parallel()
	a := flow(t, "bpA", ids("a", "b"), "a>b")
	b := flow(t, "bpB", ids("c", "d"), "c>d")
	r := newRig(t, rigConfig{noWorkers: true}, a, b)
	id := r.start("bpA", nil)
	r.drain(10)
	before := r.status(id)
	requireStatus(t, sqsadapter.StatusCompleted, before)
	var err error
	require.NotPanics(t, func() {
		err = r.client.HandleJob(t.Context(), sqsadapter.Job{RunID: id, BlueprintID: "bpB", NodeID: "a"})
	})
	t.Log(err)
	assert.Equal(t, 1, r.log.count("a"))
	assert.Zero(t, r.log.count("c")+r.log.count("d"))
	assert.Equal(t, before.Context, r.status(id).Context)
}

// A stray job for a skipped node of a completed run runs nothing.
func TestStrayJobForSkippedNodeOfFinishedRun(t *testing.T) {
	t.Parallel()
	bp := flow(t, "stray", ids("s", "a", "b"), fedge("s", "a", "condition", "false"), "a>b")
	r := newRig(t, rigConfig{noWorkers: true}, bp)
	id := r.start("stray", nil)
	r.drain(10)
	before := r.status(id)
	requireStatus(t, sqsadapter.StatusCompleted, before)
	for _, n := range []string{"a", "b", "s"} {
		require.NotPanics(t, func() {
			_ = r.client.HandleJob(t.Context(), sqsadapter.Job{RunID: id, BlueprintID: "stray", NodeID: n})
		})
	}
	r.drain(10)
	assert.Zero(t, r.log.count("a")+r.log.count("b"), "a skipped node of a finished run ran")
	assert.Equal(t, 1, r.log.count("s"))
	assert.Equal(t, before.Context, r.status(id).Context)
}

// A fallback's "inputs" are resolved for it.
func TestFallbackInputs(t *testing.T) {
	t.Parallel()
	bp := flow(t, "fbin", ids("s", fnode("f", `"config":{"fallback":"fb"}`), fnode("fb", `"inputs":"s"`)), "s>f")
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"f": failWith("nope"), "s": output("emitted", "")}}, bp)
	st := r.wait(r.start("fbin", nil))
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, "emitted", r.log.input(t, "fb"))
}

// An "any" join's input is the firing predecessor's staged value (its
// edge's transform result, else its output), as on Flowcraft.
func TestAnyJoinInputIsFiringPredecessorValue(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		edges []string
		want  any
	}{
		{"output", []string{fedge("s", "a", "action", "left"), fedge("s", "b", "action", "right"), "a>j", "b>j"}, map[string]any{"from": "a"}},
		{"transform", []string{fedge("s", "a", "action", "left"), fedge("s", "b", "action", "right"), fedge("a", "j", "transform", "input.from + '!'"), "b>j"}, "a!"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bp := flow(t, "merge", ids("s", "a", "b", fnode("j", `"config":{"joinStrategy":"any"}`)), c.edges...)
			r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"s": output("x", "left")}}, bp)
			st := r.wait(r.start("merge", nil))
			requireStatus(t, sqsadapter.StatusCompleted, st)
			assert.Equal(t, c.want, r.log.input(t, "j"))
		})
	}
}
