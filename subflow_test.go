package sqsadapter_test

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
	"github.com/flowcraft/sqsadapter/store"
)

// subRigMaker builds a rig (in memory or on the emulators) with several
// blueprints.
type subRigMaker func(t *testing.T, nodes map[string]sqsadapter.NodeFunc, bps ...*sqsadapter.Blueprint) waitRig

func memorySubRig(t *testing.T, nodes map[string]sqsadapter.NodeFunc, bps ...*sqsadapter.Blueprint) waitRig {
	return newRig(t, rigConfig{nodes: nodes}, bps...)
}

func emulatorSubRig(t *testing.T, nodes map[string]sqsadapter.NodeFunc, bps ...*sqsadapter.Blueprint) waitRig {
	return newItRig(t, itRigConfig{nodes: nodes}, bps...)
}

var subflowScenarios = []struct {
	name string
	run  func(t *testing.T, mk subRigMaker)
}{
	{"inputs and outputs", scenarioSubflowMapped},
	{"input and terminals", scenarioSubflowTerminals},
	{"failed child retried", scenarioSubflowRetry},
	{"failed child fails the node", scenarioSubflowFails},
	{"awaiting propagates", scenarioSubflowAwaiting},
	{"cancel cascades", scenarioSubflowCancel},
	{"nested", scenarioSubflowNested},
}

func TestSubflow(t *testing.T) {
	t.Parallel()
	for _, sc := range subflowScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, memorySubRig)
		})
	}
}

func TestIntegrationSubflow(t *testing.T) {
	integrationEndpoints(t)
	for _, sc := range subflowScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, emulatorSubRig)
		})
	}
}

// childBlueprint is a chain c1 -> c2 whose nodes report their input.
func childBlueprint(t *testing.T) *sqsadapter.Blueprint {
	return mustParse(t, `{"id": "child", "nodes": [{"id": "c1", "uses": "n"}, {"id": "c2", "uses": "n"}],
		"edges": [{"source": "c1", "target": "c2"}]}`)
}

// With params.inputs and params.outputs (reference §4.4): the child starts
// with the mapped parent values, the parent receives the mapped child
// outputs, and the node's output is the child's final context.
func scenarioSubflowMapped(t *testing.T, mk subRigMaker) {
	parent := mustParse(t, `{"id": "parent", "nodes": [{"id": "a", "uses": "n"},
		{"id": "sub", "uses": "subflow", "params": {"blueprintId": "child",
			"inputs": {"order": "a", "note": "note", "missing": "nothing"}, "outputs": {"result": "c2", "seen": "order"}}},
		{"id": "after", "uses": "n"}],
	  "edges": [{"source": "a", "target": "sub"}, {"source": "sub", "target": "after"}]}`)
	nodes := map[string]sqsadapter.NodeFunc{
		"c1": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			order, _, err := nc.Get(ctx, "order")
			if err != nil {
				return sqsadapter.NodeResult{}, err
			}
			note, _, _ := nc.Get(ctx, "note")
			return sqsadapter.NodeResult{Output: map[string]any{"order": order, "note": note}}, nil
		},
	}
	r := mk(t, nodes, parent, childBlueprint(t))
	id := r.start("parent", map[string]any{"note": "fragile"})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)

	childID := "subflow:" + id + ":sub:1"
	assert.Equal(t, []string{childID}, st.Children)
	c2 := map[string]any{"from": "c2"}
	assert.Equal(t, c2, st.Context["result"], "outputs: the child's node output")
	assert.Equal(t, map[string]any{"from": "a"}, st.Context["seen"], "outputs: a child context key")
	out, ok := st.Context["_outputs.sub"].(map[string]any)
	require.True(t, ok, "the output is the child's context: %v", st.Context["_outputs.sub"])
	assert.Equal(t, c2, out["_outputs.c2"])
	assert.Equal(t, "fragile", out["note"])
	assert.NotContains(t, out, "missing", "an absent parent key seeds nothing")
	assert.Equal(t, out, r.calls().input(t, "after"))

	child := r.status(childID)
	requireStatus(t, sqsadapter.StatusCompleted, child)
	require.NotNil(t, child.Parent)
	assert.Equal(t, id, child.Parent.RunID)
	assert.Equal(t, "sub", child.Parent.NodeID)
	assert.Equal(t, "parent", child.Parent.BlueprintID)
	assert.Equal(t, map[string]any{"order": map[string]any{"from": "a"}, "note": "fragile"}, child.Context["_outputs.c1"])
	assert.Nil(t, r.calls().input(t, "c1"), "with inputs, the start node gets no _inputs")
	assert.Equal(t, 1, r.calls().count("c1"))
	assert.Equal(t, "subflow", st.Nodes["sub"].Wait.Reason)
	assert.Equal(t, childID, st.Nodes["sub"].Wait.Details["runId"])
}

// Without params.inputs the node's input seeds every child start node;
// without params.outputs the output is the single terminal's, or a map of
// the terminals'.
func scenarioSubflowTerminals(t *testing.T, mk subRigMaker) {
	parent := mustParse(t, `{"id": "parent", "nodes": [{"id": "a", "uses": "n"},
		{"id": "one", "uses": "subflow", "params": {"blueprintId": "child"}},
		{"id": "two", "uses": "subflow", "params": {"blueprintId": "forks"}}],
	  "edges": [{"source": "a", "target": "one"}, {"source": "a", "target": "two"}]}`)
	forks := mustParse(t, `{"id": "forks", "nodes": [{"id": "f1", "uses": "n"}, {"id": "f2", "uses": "n"}, {"id": "f3", "uses": "n"}],
		"edges": [{"source": "f1", "target": "f2"}]}`)
	r := mk(t, nil, parent, childBlueprint(t), forks)
	id := r.start("parent", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"from": "c2"}, st.Context["_outputs.one"])
	assert.Equal(t, map[string]any{"f2": map[string]any{"from": "f2"}, "f3": map[string]any{"from": "f3"}}, st.Context["_outputs.two"])
	assert.Equal(t, map[string]any{"from": "a"}, r.calls().input(t, "c1"))
	assert.Equal(t, map[string]any{"from": "a"}, r.calls().input(t, "f1"))
	assert.Equal(t, map[string]any{"from": "a"}, r.calls().input(t, "f3"))
	assert.Len(t, st.Children, 2)
}

// A failed child is a failed attempt of its node: with attempts left, the
// node starts a fresh child run.
func scenarioSubflowRetry(t *testing.T, mk subRigMaker) {
	parent := mustParse(t, `{"id": "parent", "nodes": [
		{"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}, "config": {"maxRetries": 3}},
		{"id": "after", "uses": "n"}],
	  "edges": [{"source": "sub", "target": "after"}]}`)
	var c2Runs atomic.Int32
	nodes := map[string]sqsadapter.NodeFunc{
		"c2": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if c2Runs.Add(1) == 1 {
				return sqsadapter.NodeResult{}, errors.New("first child breaks")
			}
			return sqsadapter.NodeResult{Output: "ok from " + nc.RunID}, nil
		},
	}
	r := mk(t, nodes, parent, childBlueprint(t))
	id := r.start("parent", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	first, second := "subflow:"+id+":sub:1", "subflow:"+id+":sub:2"
	assert.Equal(t, "ok from "+second, st.Context["_outputs.sub"])
	assert.Equal(t, 2, st.Nodes["sub"].Attempts)
	assert.Equal(t, []string{second}, st.Children)
	failed := r.status(first)
	requireStatus(t, sqsadapter.StatusFailed, failed)
	assert.Equal(t, "c2", failed.FailedNode)
	assert.Equal(t, 2, r.calls().count("c1"), "one c1 per child run")
}

// A child that fails every attempt fails its node: the fallback runs, or
// the parent run fails with the child's error.
func scenarioSubflowFails(t *testing.T, mk subRigMaker) {
	parent := mustParse(t, `{"id": "parent", "nodes": [
		{"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}},
		{"id": "saved", "uses": "subflow", "params": {"blueprintId": "child"}, "config": {"fallback": "plan-b"}},
		{"id": "plan-b", "uses": "n"}],
	  "edges": []}`)
	nodes := map[string]sqsadapter.NodeFunc{
		"c2": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, errors.New("c2 is broken")
		},
	}
	r := mk(t, nodes, parent, childBlueprint(t))
	id := r.start("parent", nil)
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusFailed, st)
	assert.Equal(t, "sub", st.FailedNode)
	assert.Contains(t, st.Error, "Sub-workflow 'child' did not complete successfully. Status: failed.")
	assert.Contains(t, st.Error, "c2 is broken")
	// The fallback of the other subflow node ran (unless the run failed
	// first and closed it).
	if ns := st.Nodes["saved"]; ns.State == "completed" {
		assert.Equal(t, "plan-b", ns.Fallback)
	}
}

// A child that awaits makes its parent await; resuming the child's wait
// node completes both.
func scenarioSubflowAwaiting(t *testing.T, mk subRigMaker) {
	parent := mustParse(t, `{"id": "parent", "nodes": [
		{"id": "sub", "uses": "subflow", "params": {"blueprintId": "approval"}}, {"id": "after", "uses": "n"}],
	  "edges": [{"source": "sub", "target": "after"}]}`)
	child := mustParse(t, `{"id": "approval", "nodes": [{"id": "ask", "uses": "wait"}, {"id": "done", "uses": "n"}],
		"edges": [{"source": "ask", "target": "done"}]}`)
	r := mk(t, nil, parent, child)
	id := r.start("parent", nil)
	st := awaitRun(t, r.adapter(), id)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status)
	childID := "subflow:" + id + ":sub:1"
	require.Equal(t, sqsadapter.StatusAwaiting, r.status(childID).Status)
	require.NoError(t, r.adapter().ResumeRun(t.Context(), childID, "ask", "yes", ""))
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"from": "done"}, st.Context["_outputs.sub"])
}

// Cancelling a parent cancels the child it waits for.
func scenarioSubflowCancel(t *testing.T, mk subRigMaker) {
	parent := mustParse(t, `{"id": "parent", "nodes": [
		{"id": "sub", "uses": "subflow", "params": {"blueprintId": "approval"}}, {"id": "after", "uses": "n"}],
	  "edges": [{"source": "sub", "target": "after"}]}`)
	child := mustParse(t, `{"id": "approval", "nodes": [{"id": "ask", "uses": "wait"}], "edges": []}`)
	r := mk(t, nil, parent, child)
	id := r.start("parent", nil)
	require.Equal(t, sqsadapter.StatusAwaiting, awaitRun(t, r.adapter(), id).Status)
	require.NoError(t, r.adapter().CancelRun(t.Context(), id, "not needed"))
	childID := "subflow:" + id + ":sub:1"
	ch := r.status(childID)
	requireStatus(t, sqsadapter.StatusCancelled, ch)
	assert.Equal(t, "parent run cancelled", ch.Error)
	requireStatus(t, sqsadapter.StatusCancelled, r.status(id))
	require.ErrorIs(t, r.adapter().ResumeRun(t.Context(), childID, "ask", "late", ""), sqsadapter.ErrRunFinished)
	assert.Zero(t, r.calls().count("after"))
}

// Subflows nest: a child may itself start a child.
func scenarioSubflowNested(t *testing.T, mk subRigMaker) {
	top := mustParse(t, `{"id": "top", "nodes": [{"id": "t", "uses": "subflow", "params": {"blueprintId": "middle"}}], "edges": []}`)
	middle := mustParse(t, `{"id": "middle", "nodes": [{"id": "m", "uses": "n"},
		{"id": "deep", "uses": "subflow", "params": {"blueprintId": "child"}}], "edges": [{"source": "m", "target": "deep"}]}`)
	r := mk(t, nil, top, middle, childBlueprint(t))
	id := r.start("top", map[string]any{"_inputs.t": 7})
	st := r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"from": "c2"}, st.Context["_outputs.t"])
	assert.Equal(t, 7.0, toFloat(r.calls().input(t, "m")))
	mid := "subflow:" + id + ":t:1"
	assert.Equal(t, []string{"subflow:" + strings.ReplaceAll(mid, ":", "%3A") + ":deep:1"}, r.status(mid).Children)
}

// memoryOptions are the required options on fresh in-memory parts.
func memoryOptions(t *testing.T) []sqsadapter.Option {
	fake := sqsadaptertest.NewSQS()
	return []sqsadapter.Option{
		sqsadapter.WithSQSClient(fake),
		sqsadapter.WithQueueURL(fake.CreateQueue(t.Name(), sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithLogger(testLogger()),
	}
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		return n
	}
	return -1
}

// Subflows are checked when the adapter is built: the child blueprint
// must be registered, no blueprint may contain itself, and the params
// must be well formed. Child run ids are reserved.
func TestSubflowLoadChecks(t *testing.T) {
	t.Parallel()
	reg := sqsadapter.NodeRegistry{"n": echo}
	build := func(bps ...string) error {
		var parsed []*sqsadapter.Blueprint
		for _, s := range bps {
			bp, err := sqsadapter.ParseBlueprint([]byte(s))
			if err != nil {
				return err
			}
			parsed = append(parsed, bp)
		}
		_, err := sqsadapter.NewSqsAdapter(append(memoryOptions(t), sqsadapter.WithRegistry(reg), sqsadapter.WithBlueprints(parsed...))...)
		return err
	}
	sub := func(id, child string) string {
		return `{"id": "` + id + `", "nodes": [{"id": "s", "uses": "subflow", "params": {"blueprintId": "` + child + `"}}], "edges": []}`
	}
	for _, tc := range []struct {
		name string
		bps  []string
		want string
	}{
		{"unknown child", []string{sub("a", "b")}, `starts blueprint "b", which is not registered`},
		{"itself", []string{sub("a", "a")}, "subflows form a cycle: a -> a"},
		{"cycle", []string{sub("a", "b"), sub("b", "c"), sub("c", "a")}, "subflows form a cycle: a -> b -> c -> a"},
		{"no blueprintId", []string{`{"id": "a", "nodes": [{"id": "s", "uses": "subflow", "params": {}}], "edges": []}`}, "params.blueprintId (a string) is missing"},
		{"outputs not strings", []string{`{"id": "a", "nodes": [{"id": "s", "uses": "subflow", "params": {"blueprintId": "a", "outputs": {"x": 1}}}], "edges": []}`}, `params.outputs["x"] must be a non-empty string`},
		{"inputs not an object", []string{`{"id": "a", "nodes": [{"id": "s", "uses": "subflow", "params": {"blueprintId": "a", "inputs": "x"}}], "edges": []}`}, "params.inputs must be an object of strings"},
		{"outputs into a reserved key", []string{`{"id": "a", "nodes": [{"id": "s", "uses": "subflow", "params": {"blueprintId": "a", "outputs": {"_outputs.x": "y"}}}], "edges": []}`}, "params.outputs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := build(tc.bps...)
			require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	require.NoError(t, build(sub("a", "b"), `{"id": "b", "nodes": [{"id": "x", "uses": "n"}], "edges": []}`))

	r := newRig(t, rigConfig{noWorkers: true}, childBlueprint(t))
	_, err := r.client.StartRun(t.Context(), "child", nil, sqsadapter.WithRunID("subflow:mine"))
	require.ErrorIs(t, err, sqsadapter.ErrInvalidOption)
	assert.Contains(t, err.Error(), "subflows' child runs")
}

// The reconciler finds a waiting subflow node whose child finished but
// whose notification was lost, and one whose child was never created.
func TestSubflowReconcile(t *testing.T) {
	t.Parallel()
	parent := mustParse(t, `{"id": "parent", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "child"}},
		{"id": "after", "uses": "n"}], "edges": [{"source": "sub", "target": "after"}]}`)
	r := newRig(t, rigConfig{noWorkers: true}, parent, childBlueprint(t))
	id := r.start("parent", nil)
	childID := "subflow:" + id + ":sub:1"
	// The parent's first job starts the child, then is lost: the
	// reconciler finds a waiting node whose child was never created...
	first := r.receive()
	require.Equal(t, "sub", first.NodeID)
	_, err := r.contexts.AcquireNode(t.Context(), id, "sub", "lost-worker", time.Now().Add(unit), time.Now())
	require.NoError(t, err)
	_, err = r.contexts.SuspendNode(t.Context(), id, "sub", "lost-worker", store.Wait{Reason: "subflow",
		Details: map[string]any{"blueprintId": "child", "runId": childID}})
	require.NoError(t, err)
	time.Sleep(3 * unit)
	stats, err := r.client.Reconcile(t.Context(), unit)
	require.NoError(t, err)
	assert.Equal(t, 1, stats.Jobs, "the job of the node whose child was never created")
	r.drain(20) // creates and runs the child; its end tells the parent
	requireStatus(t, sqsadapter.StatusCompleted, r.status(childID))
	requireStatus(t, sqsadapter.StatusCompleted, r.status(id))

	// ...and one whose child finished while its notification was lost.
	id2 := r.start("parent", nil)
	child2 := "subflow:" + id2 + ":sub:1"
	for range 50 {
		j := r.receive()
		if j.RunID == id2 && j.NodeID == "sub" && r.nodeState(id2, "sub") == "waiting" {
			if st, err := r.client.GetRun(t.Context(), child2); err == nil && st.Finished() {
				break // the notification: dropped
			}
		}
		require.NoError(t, r.client.HandleJob(t.Context(), j))
	}
	requireStatus(t, sqsadapter.StatusCompleted, r.status(child2))
	require.Equal(t, "waiting", r.nodeState(id2, "sub"))
	time.Sleep(3 * unit)
	stats, err = r.client.Reconcile(t.Context(), unit)
	require.NoError(t, err)
	assert.Equal(t, 1, stats.Jobs, "the job of the node whose child finished")
	r.drain(20)
	requireStatus(t, sqsadapter.StatusCompleted, r.status(id2))
}

// receive takes one job message off the queue and deletes it.
func (r *rig) receive() sqsadapter.Job {
	r.t.Helper()
	for range 100 {
		out, err := r.sqs.ReceiveMessage(r.t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(r.queue), MaxNumberOfMessages: 1})
		require.NoError(r.t, err)
		if len(out.Messages) == 0 {
			time.Sleep(unit)
			continue
		}
		m := out.Messages[0]
		job, err := sqsadapter.DecodeJob([]byte(aws.ToString(m.Body)))
		require.NoError(r.t, err)
		_, err = r.sqs.DeleteMessage(r.t.Context(), &sqs.DeleteMessageInput{QueueUrl: aws.String(r.queue), ReceiptHandle: m.ReceiptHandle})
		require.NoError(r.t, err)
		return job
	}
	r.t.Fatal("no job in the queue")
	return sqsadapter.Job{}
}

// What a subflow costs beyond its child's own nodes (BENCHMARKS.md): a
// parent chain a -> sub -> c whose child is one node, against a plain
// chain a -> b -> c plus that node's run on its own.
func TestSubflowCost(t *testing.T) {
	t.Parallel()
	cost := func(bps ...string) (map[string]int, int) {
		var parsed []*sqsadapter.Blueprint
		for _, s := range bps {
			parsed = append(parsed, mustParse(t, s))
		}
		r := newRig(t, rigConfig{workers: 1}, parsed...)
		requireStatus(t, sqsadapter.StatusCompleted, r.wait(r.start(parsed[0].ID, nil)))
		calls := maps.Clone(r.contexts.Calls())
		maps.Copy(calls, r.coord.Calls())
		return calls, r.sqs.Stats().Sent
	}
	// GetRun, ListNodes, Snapshot and SnapshotNodes are also the client's polls, whose
	// number depends on timing: left out of the comparison.
	total := func(calls map[string]int) int {
		n := 0
		for op, c := range calls {
			if op != "GetRun" && op != "ListNodes" && op != "Snapshot" && op != "SnapshotNodes" {
				n += c
			}
		}
		return n
	}
	child := `{"id": "one", "nodes": [{"id": "x", "uses": "n"}], "edges": []}`
	plain, plainSent := cost(`{"id": "plain", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "n"}, {"id": "c", "uses": "n"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`)
	alone, aloneSent := cost(child)
	sub, subSent := cost(`{"id": "parent", "nodes": [{"id": "a", "uses": "n"}, {"id": "b", "uses": "subflow", "params": {"blueprintId": "one"}}, {"id": "c", "uses": "n"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}]}`, child)
	t.Logf("plain chain: %d store calls %v, %d sent", total(plain), plain, plainSent)
	t.Logf("child alone: %d store calls %v, %d sent", total(alone), alone, aloneSent)
	t.Logf("with subflow: %d store calls %v, %d sent", total(sub), sub, subSent)
	extra := total(sub) - total(plain) - total(alone)
	t.Logf("a subflow costs %d store calls and %d messages beyond a plain node and its child's run", extra, subSent-plainSent-aloneSent)
	assert.Equal(t, 1, sub["SuspendNode"])
	assert.Equal(t, 1, sub["ResumeNode"])
	assert.Equal(t, 2, sub["CreateRun"], "the parent and its child")
	// The node's own commit is its resume; beyond it: the suspend, the
	// record that the child's start jobs were sent, and for the job that
	// resumes it (the child's notification) its acquire and its input's
	// read, and the node's re-read once its child is created; not counted
	// here, two GetRun (the child's record, read by the child to find its
	// parent and by the node) and the child's Snapshot.
	assert.Equal(t, 5, extra, "store writes and node reads beyond a plain node and the child's own run")
	assert.Equal(t, 1, sub["SetIfNotExist"], "the record that the child's start jobs were sent")
	assert.Equal(t, plainSent+aloneSent, subSent-1, "one message more: the child's job to its parent")
}
