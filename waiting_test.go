package sqsadapter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
)

// waitRig is what the waiting scenarios need of a rig; they run on the
// in-memory parts (rig) and on the emulators (itRig).
type waitRig interface {
	start(bp string, initial map[string]any, opts ...sqsadapter.RunOption) string
	wait(id string) *sqsadapter.RunStatus
	status(id string) *sqsadapter.RunStatus
	calls() *callLog
	adapter() *sqsadapter.SqsAdapter
}

func (r *rig) adapter() *sqsadapter.SqsAdapter   { return r.client }
func (r *itRig) adapter() *sqsadapter.SqsAdapter { return r.client }

type waitRigMaker func(t *testing.T, nodes map[string]sqsadapter.NodeFunc, bp *sqsadapter.Blueprint) waitRig

func memoryWaitRig(t *testing.T, nodes map[string]sqsadapter.NodeFunc, bp *sqsadapter.Blueprint) waitRig {
	return newRig(t, rigConfig{nodes: nodes}, bp)
}

func emulatorWaitRig(t *testing.T, nodes map[string]sqsadapter.NodeFunc, bp *sqsadapter.Blueprint) waitRig {
	return newItRig(t, itRigConfig{nodes: nodes}, bp)
}

// The scenarios that run on both.
var waitScenarios = []struct {
	name string
	run  func(t *testing.T, mk waitRigMaker)
}{
	{"wait and resume", scenarioWaitAndResume},
	{"concurrent resumes", scenarioConcurrentResumes},
	{"webhook", scenarioWebhook},
	{"webhook paired with wait", scenarioWebhookPairedWithWait},
	{"sleep", scenarioSleep},
}

func TestWaiting(t *testing.T) {
	t.Parallel()
	for _, sc := range waitScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, memoryWaitRig)
		})
	}
}

func TestIntegrationWaiting(t *testing.T) {
	integrationEndpoints(t)
	for _, sc := range waitScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, emulatorWaitRig)
		})
	}
}

// awaitRun waits until the run is awaiting (or finished) and returns it.
func awaitRun(t *testing.T, client *sqsadapter.SqsAdapter, id string) *sqsadapter.RunStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	st, err := client.WaitForRun(ctx, id, sqsadapter.UntilAwaiting())
	require.NoError(t, err)
	return st
}

// A wait node suspends its run; ResumeRun commits its output and action
// once and the run goes on along the action's edge.
func scenarioWaitAndResume(t *testing.T, mk waitRigMaker) {
	bp := mustParse(t, `{"id": "approval", "nodes": [
		{"id": "submit", "uses": "n"},
		{"id": "review", "uses": "wait", "params": {"eventName": "order-review"}},
		{"id": "ship", "uses": "n"}, {"id": "refund", "uses": "n"}],
	  "edges": [{"source": "submit", "target": "review"},
		{"source": "review", "target": "ship", "action": "approve"},
		{"source": "review", "target": "refund", "action": "reject"}]}`)
	r := mk(t, nil, bp)
	id := r.start("approval", nil)
	st := awaitRun(t, r.adapter(), id)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status)
	review := st.Nodes["review"]
	assert.Equal(t, "waiting", review.State)
	require.NotNil(t, review.Wait)
	assert.Equal(t, "external_event", review.Wait.Reason)
	assert.Equal(t, map[string]any{"eventName": "order-review"}, review.Wait.Details)
	assert.Zero(t, r.calls().count("ship"))

	ctx := t.Context()
	require.NoError(t, r.adapter().ResumeRun(ctx, id, "review", map[string]any{"by": "ann"}, "approve"))
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"by": "ann"}, st.Context["_outputs.review"])
	assert.Equal(t, []string{"ship"}, r.calls().ran("ship", "refund"), "routed by the resume's action")
	assert.Equal(t, map[string]any{"by": "ann"}, r.calls().input(t, "ship"))

	err := r.adapter().ResumeRun(ctx, id, "review", "again", "reject")
	require.ErrorIs(t, err, sqsadapter.ErrRunFinished, "the run is completed")
	require.ErrorIs(t, r.adapter().ResumeRun(ctx, "no-such-run", "review", nil, ""), sqsadapter.ErrRunNotFound)
}

// Of concurrent resumes of one node exactly one wins; the others change
// nothing. A node not waiting yet cannot be resumed.
func scenarioConcurrentResumes(t *testing.T, mk waitRigMaker) {
	bp := mustParse(t, `{"id": "race", "nodes": [{"id": "gate", "uses": "wait"}, {"id": "after", "uses": "n"},
		{"id": "late", "uses": "n"}],
	  "edges": [{"source": "gate", "target": "after"}]}`)
	r := mk(t, nil, bp)
	id := r.start("race", nil)
	st := awaitRun(t, r.adapter(), id)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status, "late ran; only the wait is left")
	require.ErrorIs(t, r.adapter().ResumeRun(t.Context(), id, "after", 1, ""), sqsadapter.ErrNotWaiting, "not reached")
	require.ErrorIs(t, r.adapter().ResumeRun(t.Context(), id, "nope", 1, ""), sqsadapter.ErrNotWaiting, "not a node")

	const racers = 12
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() { errs[i] = r.adapter().ResumeRun(t.Context(), id, "gate", i, "") })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "two resumes won: %v", errs)
			winner = i
		} else {
			require.ErrorIs(t, err, sqsadapter.ErrNotWaiting)
		}
	}
	require.NotEqual(t, -1, winner, "no resume won: %v", errs)
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.EqualValues(t, winner, st.Context["_outputs.gate"])
	assert.Equal(t, 1, r.calls().count("after"))
}

// Branches that do not wait keep running; the run is awaiting only once
// nothing but waiting is left. CancelRun ends an awaiting run, and its
// waiting node can no longer be resumed.
func TestAwaitingAndCancel(t *testing.T) {
	t.Parallel()
	release, started := newGate(), newGate()
	bp := mustParse(t, `{"id": "mixed", "nodes": [{"id": "s", "uses": "n"}, {"id": "w", "uses": "wait"},
		{"id": "slow", "uses": "n"}, {"id": "end", "uses": "n"}],
	  "edges": [{"source": "s", "target": "w"}, {"source": "s", "target": "slow"}, {"source": "slow", "target": "end"}]}`)
	r := newRig(t, rigConfig{nodes: map[string]sqsadapter.NodeFunc{"slow": blockUntil(release, started)}}, bp)
	id := r.start("mixed", nil)
	started.await(t, "slow started")
	eventually(t, func() bool { return r.status(id).Nodes["w"].State == "waiting" }, "w waits")
	assert.Equal(t, sqsadapter.StatusRunning, r.status(id).Status, "slow still runs: not awaiting")
	release.open()
	st := awaitRun(t, r.client, id)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status)
	assert.Equal(t, 1, r.log.count("end"))

	require.NoError(t, r.client.CancelRun(t.Context(), id, "no answer"))
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCancelled, st)
	require.ErrorIs(t, r.client.ResumeRun(t.Context(), id, "w", nil, ""), sqsadapter.ErrRunFinished)
}

// A webhook node waits with an unguessable id; a POST of JSON to the
// handler resumes it once with the body as its output.
func scenarioWebhook(t *testing.T, mk waitRigMaker) {
	bp := mustParse(t, `{"id": "hook", "nodes": [{"id": "pay", "uses": "webhook"}, {"id": "done", "uses": "n"}],
	  "edges": [{"source": "pay", "target": "done", "condition": "result.output.status === 'paid'"}]}`)
	r := mk(t, nil, bp)
	srv := httptest.NewServer(r.adapter().WebhookHandler())
	t.Cleanup(srv.Close)
	id := r.start("hook", nil)
	st := awaitRun(t, r.adapter(), id)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status)
	w := st.Nodes["pay"].Wait
	require.NotNil(t, w)
	assert.Equal(t, "webhook", w.Reason)
	require.Len(t, w.WebhookID, 32, "128 random bits, hex")
	assert.NotContains(t, w.WebhookID, id)

	post := func(hookID, ctype, body string) int {
		resp, err := http.Post(srv.URL+"/webhooks/"+hookID, ctype, strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusUnsupportedMediaType, post(w.WebhookID, "text/plain", `{}`))
	assert.Equal(t, http.StatusBadRequest, post(w.WebhookID, "application/json", `{"status":`))
	assert.Equal(t, http.StatusRequestEntityTooLarge, post(w.WebhookID, "application/json", `"`+strings.Repeat("x", 300<<10)+`"`))
	assert.Equal(t, http.StatusNotFound, post(strings.Repeat("0", 32), "application/json", `{}`))
	resp, err := http.Get(srv.URL + "/webhooks/" + w.WebhookID)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	assert.Equal(t, http.StatusAccepted, post(w.WebhookID, "application/json", `{"status": "paid", "amount": 12}`))
	assert.Equal(t, http.StatusNotFound, post(w.WebhookID, "application/json", `{"status": "paid"}`), "used once")
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"status": "paid", "amount": int64(12)}, st.Context["_outputs.pay"])
	assert.Equal(t, 1, r.calls().count("done"))
	require.ErrorIs(t, r.adapter().DeliverWebhook(t.Context(), w.WebhookID, nil), sqsadapter.ErrNotWaiting)
}

// Flowcraft pairs a webhook node with a wait node on "webhook:<id>": the
// delivery resumes the webhook, and the paired wait passes it on.
func scenarioWebhookPairedWithWait(t *testing.T, mk waitRigMaker) {
	bp := mustParse(t, `{"id": "paired", "nodes": [{"id": "hook", "uses": "webhook"},
		{"id": "hook_wait", "uses": "wait", "params": {"eventName": "webhook:hook"}}, {"id": "after", "uses": "n"}],
	  "edges": [{"source": "hook", "target": "hook_wait"}, {"source": "hook_wait", "target": "after"}]}`)
	r := mk(t, nil, bp)
	id := r.start("paired", nil)
	st := awaitRun(t, r.adapter(), id)
	hook := st.Nodes["hook"].Wait
	require.NotNil(t, hook)
	require.NoError(t, r.adapter().DeliverWebhook(t.Context(), hook.WebhookID, map[string]any{"ok": true}))
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"ok": true}, r.calls().input(t, "after"))
}

// A sleep waits at least its duration, durably, and passes its input on.
func scenarioSleep(t *testing.T, mk waitRigMaker) {
	bp := mustParse(t, `{"id": "nap", "nodes": [{"id": "a", "uses": "n"},
		{"id": "nap", "uses": "sleep", "params": {"duration": "1s"}}, {"id": "quick", "uses": "sleep", "params": {"duration": 0}},
		{"id": "b", "uses": "n"}],
	  "edges": [{"source": "a", "target": "nap"}, {"source": "nap", "target": "quick"}, {"source": "quick", "target": "b"}]}`)
	r := mk(t, map[string]sqsadapter.NodeFunc{"a": output(map[string]any{"v": 1}, "")}, bp)
	start := time.Now()
	id := r.start("nap", nil)
	eventually(t, func() bool { return r.status(id).Nodes["nap"].State == "waiting" }, "nap sleeps")
	st := r.status(id)
	assert.Equal(t, sqsadapter.StatusAwaiting, st.Status)
	wake := st.Nodes["nap"].Wait.WakeAt
	assert.Equal(t, "timer", st.Nodes["nap"].Wait.Reason)
	assert.WithinDuration(t, start.Add(time.Second), wake, 500*time.Millisecond)
	st = r.wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	bAt := r.calls().get("b")[0].At
	assert.False(t, bAt.Before(wake), "b ran at %v, before the sleep's wake-up time %v", bAt, wake)
	// It wakes about a second (one SQS delay unit) after its time, plus a
	// receive; allow a loaded machine more.
	assert.Less(t, bAt.Sub(wake), 5*time.Second, "woke late")
	assert.Equal(t, map[string]any{"v": int64(1)}, st.Context["_outputs.nap"], "a sleep passes its input on")
	assert.Equal(t, map[string]any{"v": int64(1)}, r.calls().input(t, "b"))
}

// Bad sleep durations fail when the blueprint is parsed; blueprints using
// the built-ins need no registry entries.
func TestBuiltinsLoad(t *testing.T) {
	t.Parallel()
	for _, d := range []string{`"3 days"`, `-5`, `"15x"`, `null`, `{}`} {
		_, err := sqsadapter.ParseBlueprint([]byte(`{"id": "s", "nodes": [{"id": "z", "uses": "sleep", "params": {"duration": ` + d + `}}]}`))
		require.ErrorIs(t, err, sqsadapter.ErrInvalidBlueprint, "duration %s", d)
		assert.Contains(t, err.Error(), "sleep", "duration %s", d)
	}
	bp := mustParse(t, `{"id": "all", "nodes": [{"id": "w", "uses": "wait"}, {"id": "h", "uses": "webhook"},
		{"id": "z", "uses": "sleep", "params": {"duration": "2d"}}]}`)
	_, err := sqsadapter.NewSqsAdapter(sqsadapter.WithSQSClient(nil), sqsadapter.WithQueueURL("q"),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{}), sqsadapter.WithBlueprints(bp))
	require.Error(t, err) // no SQS client and stores: but no complaint about the built-ins
	assert.NotContains(t, err.Error(), "registry")
}

// The reference's order blueprint, loaded unchanged: its manual review is a
// Flowcraft wait node, resumed with an action, after which the "any" join
// notifies the customer.
func orderReviewRegistry() sqsadapter.NodeRegistry {
	out := func(v any, action string) sqsadapter.NodeFunc {
		return func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: v, Action: action}, nil
		}
	}
	return sqsadapter.NodeRegistry{
		"orders.fetch":      out(map[string]any{"id": "o-9", "lineItems": []any{"A"}}, ""),
		"inventory.check":   out(true, ""),
		"fraud.score":       out(map[string]any{"score": 0.7}, ""),
		"pricing.quote":     out(42, ""),
		"pricing.listPrice": out(40, ""),
		"orders.decide":     out("needs a person", "review"),
		"payments.charge":   out(map[string]any{"customer": map[string]any{"isVip": false}}, ""),
		"orders.reject":     out("rejected", ""),
		"crm.gift":          out("gift", ""),
		"notify.email": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: map[string]any{"told": nc.Input}}, nil
		},
	}
}

func checkOrderReview(t *testing.T, client *sqsadapter.SqsAdapter, wait func(id string) *sqsadapter.RunStatus) {
	t.Helper()
	id, err := client.StartRun(t.Context(), "order-fulfilment", nil)
	require.NoError(t, err)
	st := awaitRun(t, client, id)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status)
	assert.Equal(t, "waiting", st.Nodes["manual-review"].State)
	assert.Equal(t, map[string]any{"eventName": "order-review"}, st.Nodes["manual-review"].Wait.Details)
	require.NoError(t, client.ResumeRun(t.Context(), id, "manual-review", map[string]any{"approved": true}, ""))
	st = wait(id)
	requireStatus(t, sqsadapter.StatusCompleted, st)
	assert.Equal(t, map[string]any{"told": map[string]any{"approved": true}}, st.Context["_outputs.notify-customer"])
	assert.NotContains(t, st.Context, "_outputs.charge-card")
}

func TestFlowcraftWaitBlueprintRuns(t *testing.T) {
	t.Parallel()
	bp, err := sqsadapter.LoadBlueprints(os.DirFS("testdata"), "order-fulfilment.json")
	require.NoError(t, err)
	e := newEnv(t, envConfig{workers: 2, registry: orderReviewRegistry(), blueprints: bp, visibility: rigVisibility})
	checkOrderReview(t, e.client, func(id string) *sqsadapter.RunStatus { return waitRun(t, e.client, id, 15*time.Second) })
}

func TestIntegrationFlowcraftWaitBlueprintRuns(t *testing.T) {
	integrationEndpoints(t)
	bp, err := sqsadapter.LoadBlueprints(os.DirFS("testdata"), "order-fulfilment.json")
	require.NoError(t, err)
	e := newItEnv(t, itConfig{registry: orderReviewRegistry(), blueprints: bp})
	checkOrderReview(t, e.client, func(id string) *sqsadapter.RunStatus { return waitRun(t, e.client, id, 45*time.Second) })
}
