package sqsadapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/store"
)

// This file is the waiting state (docs/protocol.md, "Waiting"): the
// built-in nodes wait, webhook and sleep suspend their node without an
// output; ResumeRun, a webhook delivery or the node's timer commits it
// later, exactly once, and the run goes on from it.

// The built-in node kinds: a node whose "uses" is one of them, and is not
// in the registry (a registered function of that name overrides it, as in
// Flowcraft), is run by the engine.
const (
	builtinWait    = "wait"
	builtinWebhook = "webhook"
	builtinSleep   = "sleep"
)

// The reasons a node waits (store.Wait.Reason), as Flowcraft names them.
const (
	reasonEvent   = "external_event"
	reasonWebhook = "webhook"
	reasonTimer   = "timer"
)

// maxDelay is SQS's longest message delay (DelaySeconds 900): a longer
// sleep is a chain of delayed messages.
const maxDelay = 15 * time.Minute

// webhookPrefix prefixes the coordination key of a webhook id.
const webhookPrefix = "flowcraft:webhook:"

// timerToken is the Token of a timer's resume: every job that wakes one
// sleep commits the same outcome, so a duplicate replays the first.
const timerToken = "timer"

// sleepPattern is Flowcraft's duration syntax: a count and a unit.
var sleepPattern = regexp.MustCompile(`^(\d+)([smhd])$`)

// sleepDuration parses a sleep node's params.duration: milliseconds, or a
// string such as "90s", "15m", "3h", "2d".
func sleepDuration(params map[string]any) (time.Duration, error) {
	switch d := params["duration"].(type) {
	case int64:
		if d < 0 {
			return 0, fmt.Errorf("duration %d ms is negative", d)
		}
		return time.Duration(d) * time.Millisecond, nil
	case float64:
		if d < 0 || d != d || d > float64(1<<53) {
			return 0, fmt.Errorf("duration %v ms is not a non-negative number", d)
		}
		return time.Duration(d * float64(time.Millisecond)), nil
	case string:
		m := sleepPattern.FindStringSubmatch(d)
		if m == nil {
			return 0, fmt.Errorf("duration %q is neither milliseconds nor a count and a unit (s, m, h, d) such as \"15m\"", d)
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > 100*365 {
			return 0, fmt.Errorf("duration %q is too long", d)
		}
		unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
		return time.Duration(n) * unit, nil
	case nil:
		return 0, errors.New(`params.duration is missing`)
	default:
		return 0, fmt.Errorf("duration %v is neither milliseconds nor a string such as \"15m\"", d)
	}
}

// pairedWebhook returns the webhook node a wait node is paired with by
// Flowcraft's convention — params.eventName "webhook:<id>" naming a
// webhook predecessor — or "". That webhook node has already waited for
// the request, so the wait node passes its input on.
func pairedWebhook(p *plan, n *planNode) string {
	ev, _ := n.def.Params["eventName"].(string)
	id, ok := strings.CutPrefix(ev, "webhook:")
	if !ok {
		return ""
	}
	if w := p.nodes[id]; w != nil && w.builtin == builtinWebhook && p.isPred(id, n) {
		return id
	}
	return ""
}

// suspend runs a built-in node whose lease this job holds: it makes the
// node wait, or, for a wait node paired with a webhook, commits its input.
func (x *jobRun) suspend(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) outcome {
	var w store.Wait
	switch x.n.builtin {
	case builtinWait:
		if pairedWebhook(x.p, x.n) != "" {
			nc := &NodeContext{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: x.n.id, Input: in, Attempt: rec.Attempts}
			return x.commit(ctx, NodeResult{Output: in}, nc, in, vals, "")
		}
		w = store.Wait{Reason: reasonEvent}
		if ev, _ := x.n.def.Params["eventName"].(string); ev != "" {
			w.Details = map[string]any{"eventName": ev}
		}
	case builtinWebhook:
		id, err := x.a.registerWebhook(ctx, x.job.RunID, x.n.id)
		if err != nil {
			return x.release(ctx, x.n.id, retryAfter(0, err))
		}
		w = store.Wait{Reason: reasonWebhook, WebhookID: id, Details: map[string]any{"event": "webhook:" + x.n.id}}
	case builtinSleep:
		d, _ := sleepDuration(x.n.def.Params) // valid: checked when the blueprint was loaded
		w = store.Wait{Reason: reasonTimer, WakeAt: x.a.cfg.clock().Add(d).Truncate(time.Millisecond)}
	case builtinSubflow:
		w = subflowWait(x.n.subflow.blueprintID, subflowRunID(x.job.RunID, x.n.id, rec.Attempts))
	}
	if x.crash("suspend") {
		return abandon
	}
	// SuspendNode drops the lease: stop extending it first.
	x.setLease(nil)
	var err error
	var got *store.NodeRecord
	err = x.retried(ctx, func() (err error) {
		got, err = x.a.cfg.contexts.SuspendNode(ctx, x.job.RunID, x.n.id, x.owner, w)
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNodeCommitted):
		return x.advance(ctx, got, true)
	case errors.Is(err, store.ErrNodeClosed):
		return done
	case errors.Is(err, store.ErrNodeFailed):
		return x.failRun(ctx, x.n.id, got.Error)
	default:
		return retryAfter(0, fmt.Errorf("sqsadapter: suspend node %q: %w", x.n.id, err))
	}
	if got.Wait != nil && (got.Wait.Reason == reasonTimer || got.Wait.Reason == reasonSubflow) {
		return x.onWaiting(ctx, got, in, vals) // schedule the timer, start the child
	}
	x.log.InfoContext(ctx, "sqsadapter: node waits", "reason", got.Wait.Reason)
	return done
}

// onWaiting handles a job whose node waits: a sleep's timer job wakes it
// when due, or is delayed again; a subflow node's job looks at its child
// (onSubflow); any other job of a waiting node is a duplicate, and is
// dropped.
func (x *jobRun) onWaiting(ctx context.Context, rec *store.NodeRecord, in any, vals map[string]any) outcome {
	if x.n.subflow != nil && waitChild(rec.Wait) != "" {
		return x.onSubflow(ctx, rec, in, vals)
	}
	if rec.Wait == nil || rec.Wait.Reason != reasonTimer {
		x.log.DebugContext(ctx, "sqsadapter: job of a waiting node dropped")
		return done
	}
	if left := rec.Wait.WakeAt.Sub(x.a.cfg.clock()); left > 0 {
		return x.delay(ctx, rec.Wait.WakeAt)
	}
	out, err := jsonvalue.Normalize(in)
	if err != nil {
		return x.failRun(ctx, x.n.id, fmt.Sprintf("sleep node %q: input: %v", x.n.id, err))
	}
	return x.resume(ctx, store.NodeCommit{NodeID: x.n.id, Output: out, Token: timerToken}, in, vals)
}

// delay sends the node's timer job again, to arrive at wakeAt or in at most
// maxDelay, and drops this one.
func (x *jobRun) delay(ctx context.Context, wakeAt time.Time) outcome {
	j := Job{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: x.n.id, BlueprintVersion: x.p.version,
		WakeAt: wakeAt.UnixMilli(), delay: min(wakeAt.Sub(x.a.cfg.clock()), maxDelay)}
	if err := x.a.send(ctx, j); err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: schedule the timer of node %q: %w", x.n.id, err))
	}
	return done
}

// resume commits a waiting node's outcome (routing decided here, from the
// outcome) and advances from it. A commit identical to the existing one (a
// retry, or a duplicate timer job) replays.
func (x *jobRun) resume(ctx context.Context, c store.NodeCommit, in any, vals map[string]any) outcome {
	rec, err := x.commitResume(ctx, c, in, vals)
	switch {
	case err == nil:
		return x.advance(ctx, rec, false)
	case errors.Is(err, store.ErrNodeCommitted) && rec != nil && rec.Token == c.Token:
		return x.advance(ctx, rec, true)
	case errors.Is(err, store.ErrNodeCommitted), errors.Is(err, store.ErrNodeClosed), errors.Is(err, store.ErrNotWaiting):
		return done
	default:
		return retryAfter(0, fmt.Errorf("sqsadapter: resume node %q: %w", x.n.id, err))
	}
}

// commitResume decides the routing of a resumed node and commits it with
// ResumeNode.
func (x *jobRun) commitResume(ctx context.Context, c store.NodeCommit, in any, vals map[string]any) (*store.NodeRecord, error) {
	if x.n.exprSelf {
		vals = overlay(vals, map[string]any{outputsPrefix + x.n.id: c.Output}, nil)
	}
	x.route(ctx, &c, in, vals)
	if x.crash("resume") {
		return nil, errCrashed
	}
	var rec *store.NodeRecord
	err := x.retried(ctx, func() (err error) {
		rec, err = x.a.cfg.contexts.ResumeNode(ctx, x.job.RunID, c)
		return err
	})
	return rec, err
}

// ResumeRun resumes a waiting node of a run — a wait node, or a webhook
// node — with output and action, exactly once: it commits them as the
// node's outcome and routes from it, with the action, as if the node had
// returned them. It needs no worker: it sends the successors' jobs itself.
//
// Of concurrent or repeated resumes of one node exactly one succeeds; the
// others return an error matching ErrNotWaiting and change nothing. So does
// a resume of a node that is not waiting (not reached yet, running, or
// already resumed). A run that is finished (cancelled, failed or completed)
// returns ErrRunFinished, an unknown run ErrRunNotFound.
func (a *SqsAdapter) ResumeRun(ctx context.Context, runID, nodeID string, output any, action string) error {
	ctx, end := a.operation(ctx, "ResumeRun", "")
	err := a.resumeRun(ctx, runID, nodeID, output, action)
	end(runID, err)
	return err
}

func (a *SqsAdapter) resumeRun(ctx context.Context, runID, nodeID string, output any, action string) error {
	run, err := a.cfg.contexts.GetRun(ctx, runID)
	if err != nil {
		return fmt.Errorf("sqsadapter: resume run %q: %w", runID, err)
	}
	if run.Status != StatusRunning {
		// A node that was resumed (by a racing call, say) answers as such.
		if recs, err := a.cfg.contexts.GetNodes(ctx, runID, []string{nodeID}); err == nil {
			if r := recs[nodeID]; r != nil && r.State == store.NodeCommitted && r.Wait != nil {
				return fmt.Errorf("sqsadapter: resume run %q node %q: %w: resumed already, and %w", runID, nodeID, ErrNotWaiting, ErrRunFinished)
			}
		}
		return fmt.Errorf("sqsadapter: resume run %q: %w (%s)", runID, ErrRunFinished, run.Status)
	}
	p := a.plans[planKey{run.BlueprintID, run.BlueprintVersion}]
	if p == nil {
		return fmt.Errorf("sqsadapter: resume run %q: %w: %q version %q", runID, ErrUnknownBlueprint, run.BlueprintID, run.BlueprintVersion)
	}
	n := p.nodes[nodeID]
	if n == nil || n.fallbackOnly {
		return fmt.Errorf("sqsadapter: resume run %q: %w: %q is not a node of blueprint %q", runID, ErrNotWaiting, nodeID, p.id)
	}
	// A sleep wakes by its timer only, and other nodes never wait.
	if n.builtin != builtinWait && n.builtin != builtinWebhook {
		return fmt.Errorf("sqsadapter: resume run %q: %w: node %q is not a wait or webhook node", runID, ErrNotWaiting, nodeID)
	}
	out, err := jsonvalue.Normalize(output)
	if err != nil {
		return fmt.Errorf("sqsadapter: resume run %q node %q: output: %w", runID, nodeID, err)
	}
	job := Job{RunID: runID, BlueprintID: p.id, NodeID: nodeID, BlueprintVersion: p.version}
	x := &jobRun{a: a, p: p, n: n, job: job, owner: "resume-" + randomID()[:12], setLease: func(*leaseRef) {},
		log: a.log.With("run_id", runID, "blueprint_id", p.id, "node_id", nodeID)}
	var in any
	var vals map[string]any
	if err := x.idempotent(ctx, func() (err error) {
		in, vals, err = x.load(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("sqsadapter: resume run %q node %q: read input: %w", runID, nodeID, err)
	}
	c := store.NodeCommit{NodeID: nodeID, Output: out, Action: action, Token: "resume-" + randomID()}
	// replay hands what follows a commit to the node's own job: a worker
	// that finds the node committed advances from it (or, if it still
	// waits, drops the job). It is how a resume whose outcome this call
	// could not learn, or that another call made, still goes on.
	replay := func() {
		if err := x.idempotent(ctx, func() error { return a.send(ctx, job) }); err != nil {
			a.log.WarnContext(ctx, "sqsadapter: resumed node's successors not scheduled; the reconciler will", "run_id", runID, "node_id", nodeID, "err", err)
		}
	}
	rec, err := x.commitResume(ctx, c, in, vals)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNodeClosed):
		return fmt.Errorf("sqsadapter: resume run %q node %q: %w", runID, nodeID, ErrRunFinished)
	case errors.Is(err, store.ErrNodeCommitted):
		// Resumed by another call, which may have stopped before it
		// advanced (its commit's answer lost, say).
		replay()
		return fmt.Errorf("sqsadapter: resume run %q node %q: %w", runID, nodeID, ErrNotWaiting)
	case errors.Is(err, store.ErrNodeFailed), errors.Is(err, store.ErrNotWaiting):
		return fmt.Errorf("sqsadapter: resume run %q node %q: %w", runID, nodeID, ErrNotWaiting)
	default:
		// The commit may have taken effect with its answer lost.
		if !errors.Is(err, errCrashed) {
			replay()
		}
		return fmt.Errorf("sqsadapter: resume run %q node %q: %w", runID, nodeID, err)
	}
	a.log.InfoContext(ctx, "sqsadapter: node resumed", "run_id", runID, "node_id", nodeID, "action", action)
	// The resume is committed: what follows is idempotent. If it fails, the
	// node's own job replays it (a worker finds the node committed and
	// advances), and failing that the reconciler does.
	if o := x.advance(ctx, rec, false); o.kind != outcomeDone {
		replay()
	}
	return nil
}

// registerWebhook draws an unguessable webhook id (128 random bits) and
// records which node it resumes.
func (a *SqsAdapter) registerWebhook(ctx context.Context, runID, nodeID string) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := hex.EncodeToString(b)
	ok, err := a.cfg.coord.SetIfNotExist(ctx, webhookPrefix+id, runID+"\x1f"+nodeID, a.cfg.coordinationTTL)
	if err != nil {
		return "", fmt.Errorf("sqsadapter: register webhook: %w", err)
	}
	if !ok {
		return "", errors.New("sqsadapter: register webhook: id collision") // 2^-128: retried
	}
	return id, nil
}

// DeliverWebhook resumes the webhook node that id belongs to, with payload
// as its output, as ResumeRun does: for hosts that receive callbacks
// without WebhookHandler (API Gateway, a queue, ...). An unknown id, or one
// already delivered, returns an error matching ErrNotWaiting.
func (a *SqsAdapter) DeliverWebhook(ctx context.Context, id string, payload any) error {
	ctx, end := a.operation(ctx, "DeliverWebhook", "")
	runID, err := a.deliverWebhook(ctx, id, payload)
	end(runID, err)
	return err
}

// deliverWebhook is DeliverWebhook; it also returns the run that the
// webhook's node is of, once known.
func (a *SqsAdapter) deliverWebhook(ctx context.Context, id string, payload any) (string, error) {
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("sqsadapter: webhook %q: %w: unknown webhook", id, ErrNotWaiting)
	}
	v, ok, err := a.cfg.coord.Get(ctx, webhookPrefix+id)
	if err != nil {
		return "", fmt.Errorf("sqsadapter: webhook %q: %w", id, err)
	}
	runID, nodeID, found := strings.Cut(v, "\x1f")
	if !ok || !found {
		return runID, fmt.Errorf("sqsadapter: webhook %q: %w: unknown webhook", id, ErrNotWaiting)
	}
	// Only the id the node waits with resumes it: an id drawn by an
	// attempt that crashed before its node waited is not.
	recs, err := a.cfg.contexts.GetNodes(ctx, runID, []string{nodeID})
	if err != nil {
		return runID, fmt.Errorf("sqsadapter: webhook %q: %w", id, err)
	}
	if r := recs[nodeID]; r == nil || r.Wait == nil || r.Wait.WebhookID != id {
		return runID, fmt.Errorf("sqsadapter: webhook %q: %w: unknown webhook", id, ErrNotWaiting)
	} else if r.State != store.NodeWaiting {
		return runID, fmt.Errorf("sqsadapter: webhook %q: %w: delivered already", id, ErrNotWaiting)
	}
	return runID, a.resumeRun(ctx, runID, nodeID, payload, "")
}

// maxWebhookBody bounds a webhook request's body: a resumed node's output
// is stored in one item (limits.ItemBytes), and a request can be no larger.
const maxWebhookBody = 256 << 10

// WebhookHandler serves webhook deliveries: a POST whose path ends with a
// webhook id (its last segment, so it mounts under any prefix) and whose
// body is JSON resumes that
// webhook node with the body as its output, once. It answers 202 Accepted
// when the node resumed; 404 for an unknown id, one already delivered, or
// a finished run; 405 for another method; 415 without a JSON content type;
// 413 for a body over 256 KiB; 400 for a body that is not JSON; 500 when the
// stores fail (the sender may retry: a delivery resumes the node once).
//
//	mux.Handle("POST /webhooks/", adapter.WebhookHandler())
func (a *SqsAdapter) WebhookHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "webhooks take POST", http.StatusMethodNotAllowed)
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			http.Error(w, "the body must be JSON (Content-Type: application/json)", http.StatusUnsupportedMediaType)
			return
		}
		id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, "body over 256 KiB", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "could not read the body", http.StatusBadRequest)
			return
		}
		payload, err := jsonvalue.Decode(body)
		if err != nil {
			http.Error(w, "the body is not JSON", http.StatusBadRequest)
			return
		}
		switch err := a.DeliverWebhook(r.Context(), id, payload); {
		case err == nil:
			w.WriteHeader(http.StatusAccepted)
		case errors.Is(err, ErrNotWaiting), errors.Is(err, ErrRunFinished), errors.Is(err, ErrRunNotFound):
			http.Error(w, "unknown or used webhook", http.StatusNotFound)
		default:
			a.log.ErrorContext(r.Context(), "sqsadapter: webhook delivery failed", "err", err)
			http.Error(w, "delivery failed; retry", http.StatusInternalServerError)
		}
	})
}

// runnable reports whether a run has work that will go on by itself: a node
// pending (running, or its job queued for a retry), or a node without a
// record that some resolved predecessor leads to (its job, skip or join
// arrival is on its way). A run without such work whose nodes wait is
// awaiting.
func runnable(p *plan, recs map[string]*store.NodeRecord) bool {
	resolved := func(id string) bool {
		r := recs[id]
		return r != nil && (r.State == store.NodeCommitted || r.State == store.NodeSkipped)
	}
	for _, n := range p.order {
		if n.fallbackOnly {
			continue
		}
		r := recs[n.id]
		if r != nil {
			if r.State == store.NodePending {
				return true
			}
			continue
		}
		if n.start {
			return true
		}
		all, some := true, false
		for _, pred := range n.preds {
			all = all && resolved(pred)
			some = some || resolved(pred)
		}
		if (n.join == "" && some) || (n.join == "all" && all) {
			return true
		}
		if n.join == "any" {
			for _, pred := range n.preds {
				if pr := recs[pred]; pr != nil && pr.State == store.NodeCommitted && slices.Contains(pr.Taken, n.id) {
					return true
				}
			}
			if all {
				return true // skipped on its way
			}
		}
	}
	return false
}
