package sqsadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/flowcraft/sqsadapter/internal/expr"
	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/obs"
	"github.com/flowcraft/sqsadapter/store"
)

// This file is the per-job protocol. docs/protocol.md explains each step
// and why a crash between any two of them is safe.

// outcomeKind says what to do with a job's message once handling stops.
type outcomeKind int

const (
	outcomeDone    outcomeKind = iota // everything the job caused is durable: delete the message
	outcomeRetry                      // not done: make the message visible again after delay
	outcomeAbandon                    // the worker "died" (test hook) or lost the message: touch nothing
)

type outcome struct {
	kind  outcomeKind
	delay time.Duration
	err   error // why, for logs and HandleJob
}

var (
	done    = outcome{kind: outcomeDone}
	abandon = outcome{kind: outcomeAbandon}
)

func retryAfter(d time.Duration, err error) outcome {
	return outcome{kind: outcomeRetry, delay: max(d, 0), err: err}
}

// errAbandoned is the failure recorded for an attempt that never reported
// back: its worker died or lost the message while it ran.
var errAbandoned = errors.New("attempt abandoned: the worker running it stopped or lost the job")

// errCrashed stops a job at a crash point of the test hook.
var errCrashed = errors.New("sqsadapter: simulated crash")

// lease is the execution lease a job holds, extended by the job's heartbeat.
type leaseRef struct {
	runID, nodeID, owner string
}

// jobRun is the state of one job being handled.
type jobRun struct {
	a   *SqsAdapter
	p   *plan
	n   *planNode
	job Job
	// owner names this handling in leases: unique per delivery.
	owner string
	// setLease registers the lease for the heartbeat (nil: none).
	setLease func(*leaseRef)
	log      *slog.Logger
	logs     jobLog   // what log points into
	lease    leaseRef // the lease of the first record leased (leaseOn)

	// Completion bookkeeping for this handling.
	final      bool              // a leaf was resolved or an "any" join heard from every predecessor
	leavesDone map[string]bool   // leaves this handling knows are resolved
	joinsDone  map[string]bool   // "any" joins this handling saw hear from every predecessor
	skipping   map[string]bool   // nodes skipped by this handling: each is propagated once
	skipped    []string          // nodes skipped by this handling
	committed  *store.NodeRecord // the record being advanced
	waiting    *store.NodeRecord // the node's record, when acquire found it waiting
	sends      []Job
	batch      *batchRun // the batch of a scatter's, an item's or a page's job (batchmap.go)
	// chain is the message's chain (chain.go), nil when no message carries
	// this handling; inline is this job when the chain carries it.
	chain  *chain
	inline *inlineJob
	// span is the telemetry of this handling (telemetry.go); nil: none.
	span obs.Span
}

func (x *jobRun) crash(step string) bool {
	return x.a.cfg.crashHook != nil && x.a.cfg.crashHook(step, x.job)
}

// handleJob runs the protocol for one job of a message's chain (ch; next
// is the job when the chain carries it) and says what to do with the
// message as far as this job goes.
func (a *SqsAdapter) handleJob(ctx context.Context, job Job, owner string, setLease func(*leaseRef), ch *chain, next *inlineJob) (o outcome) {
	x := &jobRun{a: a, job: job, owner: owner, setLease: setLease, chain: ch, inline: next}
	log := a.initJobLog(&x.logs, job)
	x.log = log
	if a.cfg.hooks != nil {
		ctx, x.span = a.startSpan(ctx, &job, ch.depth, ch.msg)
		defer func() {
			if ch.more {
				ch.trace = a.cfg.hooks.Inject(ctx) // the chained job's parent
			}
			x.span.End(o.name(), o.err)
		}()
	}
	defer func() {
		// A bug must not take the worker down on every delivery of a job:
		// the job is left for the redrive policy.
		if p := recover(); p != nil {
			log.ErrorContext(ctx, "sqsadapter: panic while handling a job; left for the dead-letter queue", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			o = retryAfter(a.cfg.visibilityTimeout, fmt.Errorf("sqsadapter: panic while handling job %s: %v", job, p))
		}
	}()
	p, err := a.planFor(ctx, job)
	if err != nil {
		if errors.Is(err, ErrUnknownBlueprint) || errors.Is(err, ErrRunNotFound) {
			// Another worker may have this blueprint version (a rolling
			// deploy): leave the job to it, and to the redrive policy.
			log.WarnContext(ctx, "sqsadapter: job for a blueprint this worker lacks", "version", job.BlueprintVersion, "err", err)
			return retryAfter(a.cfg.visibilityTimeout, err)
		}
		return retryAfter(0, err)
	}
	if a.cfg.checkRuns && next == nil { // a chain's jobs are this worker's own
		if err := a.checkRun(ctx, job); err != nil {
			log.WarnContext(ctx, "sqsadapter: job refused by the run check; left for the dead-letter queue", "err", err)
			return retryAfter(a.cfg.visibilityTimeout, err)
		}
	}
	x.p = p
	n := p.iterNode(job.NodeID, job.Iter)
	if n == nil || n.fallbackOnly {
		err := fmt.Errorf("%w: unknown node: %q is not a schedulable node of blueprint %q version %q", ErrInvalidJob, job.NodeID, p.id, p.version)
		log.ErrorContext(ctx, "sqsadapter: job for an unknown node; failing the run", "err", err)
		return x.failRun(ctx, job.NodeID, err.Error())
	}
	x.n = n
	if next != nil && next.rec != nil {
		return x.advance(ctx, next.rec, true) // a committed step of the chain, replayed
	}
	return x.run(ctx)
}

// checkRun verifies that the job's run exists and uses the job's blueprint.
func (a *SqsAdapter) checkRun(ctx context.Context, job Job) error {
	rec, err := a.cfg.contexts.GetRun(ctx, job.RunID)
	if err != nil {
		return fmt.Errorf("sqsadapter: run check: %w", err)
	}
	if rec.BlueprintID != job.BlueprintID || (job.BlueprintVersion != "" && rec.BlueprintVersion != job.BlueprintVersion) {
		return fmt.Errorf("%w: job names blueprint %q version %q but run %q uses %q version %q", ErrUnknownBlueprint,
			job.BlueprintID, job.BlueprintVersion, job.RunID, rec.BlueprintID, rec.BlueprintVersion)
	}
	return nil
}

func (x *jobRun) run(ctx context.Context) outcome {
	if x.crash("receive") {
		return abandon
	}
	if wake := time.UnixMilli(x.job.WakeAt); x.job.WakeAt != 0 && wake.After(x.a.cfg.clock()) {
		return x.delay(ctx, wake) // a sleep's timer, early: delay it again
	}
	if x.job.Item > 0 || x.job.Page > 0 {
		return x.batchJob(ctx) // a batch's item or page (batchmap.go)
	}
	// The input is read before the lease is taken, so that a failed read
	// costs no attempt: an attempt is counted only right before the node
	// function is entered. The input cannot change meanwhile: it is what
	// committed predecessors wrote.
	var in any
	var vals map[string]any
	err := x.idempotent(ctx, func() (err error) {
		in, vals, err = x.load(ctx)
		return err
	})
	if err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: load input of node %q: %w", x.n.id, err))
	}
	rec, o, ok := x.acquire(ctx, x.n.id, 0)
	if !ok {
		if x.waiting != nil {
			return x.onWaiting(ctx, x.waiting, in, vals)
		}
		return o
	}
	if x.crash("acquired") {
		return abandon
	}
	if o, ok := x.batchNode(ctx, rec, in, vals); ok {
		return o
	}
	if x.n.builtin == builtinLoop {
		return x.loopPass(ctx, rec, in, vals)
	}
	if x.n.builtin != "" {
		return x.suspend(ctx, rec, in, vals)
	}
	res, nc, attempt, o, ok := x.attempts(ctx, x.n, x.n.id, rec, in)
	if !ok {
		return o
	}
	if nc != nil {
		return x.commit(ctx, res, nc, in, vals, "")
	}
	// The node failed for good (res carries nothing; the error is in o.err).
	failure := o.err
	if fb := x.n.fallback; fb != nil && !IsPermanent(failure) {
		return x.runFallback(ctx, fb, in, vals, failure, attempt)
	}
	return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.label(), Attempt: attempt, Err: failure}).Error())
}

// acquire takes the execution lease of record id and counts an attempt. ok
// is false when the job must stop with outcome o (committed: replayed).
// prev is the attempt count this handling last saw on the record (0 if
// none): a failed call is retried, but only after a read shows that it did
// not take effect with its response lost, so that a store fault never
// counts an attempt twice.
func (x *jobRun) acquire(ctx context.Context, id string, prev int) (*store.NodeRecord, outcome, bool) {
	cs := x.a.cfg.contexts
	var rec *store.NodeRecord
	var err error
	for try := 0; ; try++ {
		now := time.Now()
		rec, err = cs.AcquireNode(ctx, x.job.RunID, id, x.owner, now.Add(x.a.cfg.visibilityTimeout), now)
		if err == nil || isDecision(err) || try == storeTries-1 || ctx.Err() != nil {
			break
		}
		var recs map[string]*store.NodeRecord
		if rerr := x.idempotent(ctx, func() (err error) {
			recs, err = cs.GetNodes(ctx, x.job.RunID, []string{id})
			return err
		}); rerr != nil {
			break
		}
		if r := recs[id]; r != nil && r.State == store.NodePending && r.LeaseOwner == x.owner && r.Attempts > prev {
			rec, err = r, nil // it took effect
			break
		}
		if !x.a.sleep(ctx, storeBackoff(try)) {
			break
		}
	}
	var held *store.LeaseHeldError
	switch {
	case err == nil:
		x.setLease(x.leaseOn(id))
		return rec, outcome{}, true
	case errors.Is(err, store.ErrNodeCommitted):
		if id == fallbackRecord(x.n.id) { // the fallback's record is never committed; the primary's is
			rec, err = x.nodeRecord(ctx, x.n.id)
			if err != nil {
				return nil, retryAfter(0, err), false
			}
		}
		return nil, x.advance(ctx, rec, true), false
	case errors.Is(err, store.ErrNodeFailed):
		// The node failed for good and its job stopped before the run was
		// marked failed: finish that.
		return nil, x.failRun(ctx, x.n.id, rec.Error), false
	case errors.Is(err, store.ErrNodeClosed):
		if child := waitChild(rec.Wait); x.n.subflow != nil && child != "" {
			// The run finished while the node waited for its child, which
			// may have been started after the run cancelled its children.
			if err := x.a.cancelChild(ctx, child, "parent run finished"); err != nil {
				return nil, retryAfter(0, err), false
			}
		}
		x.log.DebugContext(ctx, "sqsadapter: job of a finished run dropped")
		return nil, done, false
	case errors.Is(err, store.ErrNodeWaiting):
		x.waiting = rec // run goes on in onWaiting
		return nil, done, false
	case errors.As(err, &held):
		if x.carriedElsewhere(held.Owner) {
			x.log.DebugContext(ctx, "sqsadapter: chain ends at a job another message carries", "holder", held.Owner)
			return nil, done, false
		}
		// A duplicate of a job that is running elsewhere: look again once
		// the lease expires; by then the node has usually committed.
		return nil, retryAfter(time.Until(held.Until)+jitter(x.a.cfg.visibilityTimeout/10), err), false
	default:
		return nil, retryAfter(0, fmt.Errorf("sqsadapter: acquire node %q: %w", id, err)), false
	}
}

// isDecision reports whether err is a store's answer about a node record
// (committed, failed, closed, leased elsewhere) rather than a failed call.
func isDecision(err error) bool {
	return errors.Is(err, store.ErrNodeCommitted) || errors.Is(err, store.ErrNodeFailed) || errors.Is(err, store.ErrNodeClosed) ||
		errors.Is(err, store.ErrLeaseHeld) || errors.Is(err, ErrValueTooLarge) || errors.Is(err, ErrInvalidKey) ||
		errors.Is(err, store.ErrNodeWaiting) || errors.Is(err, store.ErrNotWaiting) || errors.Is(err, store.ErrLeaseLost)
}

// leaseOn is the lease of record id for the heartbeat: the handling's own
// for the first record it leases (and again for that record), written
// before the heartbeat sees it and never changed after; a new one for
// another record (a fallback's).
func (x *jobRun) leaseOn(id string) *leaseRef {
	switch x.lease.nodeID {
	case "":
		x.lease = leaseRef{runID: x.job.RunID, nodeID: id, owner: x.owner}
		return &x.lease
	case id:
		return &x.lease
	}
	return &leaseRef{runID: x.job.RunID, nodeID: id, owner: x.owner}
}

func (x *jobRun) nodeRecord(ctx context.Context, id string) (*store.NodeRecord, error) {
	recs, err := x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, []string{id})
	if err != nil {
		return nil, err
	}
	if r := recs[id]; r != nil {
		return r, nil
	}
	return nil, fmt.Errorf("sqsadapter: record of node %q vanished", id)
}

// release gives the lease back so that the message's next delivery can run
// the node at once, then returns o.
func (x *jobRun) release(ctx context.Context, id string, o outcome) outcome {
	x.setLease(nil)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.a.cfg.ackTimeout)
	defer cancel()
	if err := x.a.cfg.contexts.ReleaseLease(rctx, x.job.RunID, id, x.owner); err != nil {
		x.log.WarnContext(ctx, "sqsadapter: release node lease", "err", err)
	}
	return o
}

// attempts runs node n (under record id) until it succeeds or fails for
// good. It returns the result and node context on success; nc == nil with
// ok == true means failed for good, the error in o.err. ok == false: stop
// with outcome o.
func (x *jobRun) attempts(ctx context.Context, n *planNode, id string, rec *store.NodeRecord, in any) (res NodeResult, nc *NodeContext, attempt int, o outcome, ok bool) {
	attempt = rec.Attempts
	if attempt > n.maxAttempts {
		// A previous delivery counted the last attempt and never reported back.
		return NodeResult{}, nil, n.maxAttempts, outcome{err: errAbandoned}, true
	}
	for {
		actx, end := ctx, func(error) {}
		if x.span != nil {
			actx, end = x.span.Attempt(ctx, x.blueprintNode(n), attempt)
		}
		res, nc, err := x.attempt(actx, n, in, attempt)
		end(err)
		if err == nil {
			return res, nc, attempt, outcome{}, true
		}
		if ctx.Err() != nil {
			// The job was cancelled (lost message, hard shutdown): the attempt
			// stays counted; the message comes back.
			return NodeResult{}, nil, attempt, x.release(ctx, id, retryAfter(0, context.Cause(ctx))), false
		}
		x.log.WarnContext(ctx, "sqsadapter: node attempt failed", "attempt", attempt, "max_attempts", n.maxAttempts, "err", err)
		if IsPermanent(err) || attempt >= n.maxAttempts {
			return NodeResult{}, nil, attempt, outcome{err: err}, true
		}
		delay := x.a.retryDelay(n, attempt)
		if x.crash("retry-wait") {
			return NodeResult{}, nil, attempt, abandon, false
		}
		if !x.a.sleep(ctx, delay) {
			// Shutting down: hand the retry to another worker after the delay.
			return NodeResult{}, nil, attempt, x.release(ctx, id, retryAfter(delay, err)), false
		}
		rec, o, ok := x.acquire(ctx, id, attempt)
		if !ok {
			return NodeResult{}, nil, attempt, o, false
		}
		if attempt = rec.Attempts; attempt > n.maxAttempts {
			return NodeResult{}, nil, n.maxAttempts, outcome{err: err}, true
		}
	}
}

// result is what an attempt's node function returned.
type result struct {
	res NodeResult
	err error
}

// timeoutGrace is how long a timed-out attempt waits for its node function
// to return before abandoning it: long enough for a function that honours
// its ctx, so that its error is reported and it does not overlap the next
// attempt; short, so that a timeout fires within its stated bound (see
// NodeConfig.Timeout).
const timeoutGrace = 20 * time.Millisecond

// cancelGrace is that wait when the job itself is cancelled (shutdown, lost
// message): longer, so that functions can clean up before the worker stops.
const cancelGrace = 250 * time.Millisecond

// attempt runs one attempt of n with its timeout, recovering panics. A
// function still running at the timeout is abandoned after timeoutGrace;
// its late result is discarded.
func (x *jobRun) attempt(ctx context.Context, n *planNode, in any, attempt int) (NodeResult, *NodeContext, error) {
	nc := &NodeContext{
		RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: n.def.ID, Iteration: x.n.iter, // a fallback runs in its node's pass
		Input: in, Params: n.def.Params, Attempt: attempt, job: x,
	}
	log := x.log
	if n.def.ID != x.job.NodeID && x.job.Item == 0 {
		log = log.With("fallback", n.id)
	}
	timeout, byDefault := n.timeout, false
	if timeout == 0 {
		timeout, byDefault = x.a.cfg.nodeTimeout, true
	}
	start := time.Now()
	actx, cancel := ctx, context.CancelFunc(func() {})
	if timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	ch := make(chan result, 1)
	go func() { // not waited for if the node ignores its ctx; see below
		var r result
		defer func() {
			if p := recover(); p != nil {
				log.ErrorContext(ctx, "sqsadapter: node panicked", "attempt", attempt, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				r = result{err: fmt.Errorf("node %q panicked: %v", n.id, p)}
			}
			ch <- r
		}()
		fn := n.fn
		for i := len(x.a.cfg.middleware) - 1; i >= 0; i-- {
			fn = x.a.cfg.middleware[i](fn)
		}
		r.res, r.err = fn(actx, nc)
	}()
	// A node still running is named in the log at least every minute, so
	// that one stuck without a timeout is found.
	still := time.NewTicker(min(x.a.cfg.visibilityTimeout, time.Minute))
	defer still.Stop()
	var r result
	returned := false
wait:
	for {
		select {
		case r = <-ch:
			returned = true
			break wait
		case <-actx.Done():
			break wait
		case <-still.C:
			log.WarnContext(ctx, "sqsadapter: node still running", "attempt", attempt, "elapsed", time.Since(start).Round(time.Millisecond), "timeout", timeout)
		}
	}
	cut := !returned // the ctx ended first
	if cut {
		// Cancelled or timed out: a node that honours its ctx returns at once.
		grace := time.NewTimer(cancelGrace)
		if ctx.Err() == nil {
			grace.Reset(timeoutGrace)
		}
		defer grace.Stop()
		select {
		case r = <-ch:
			returned = true
		case <-grace.C:
			// The node ignores its ctx: stop waiting for it. Its result, if
			// it ever returns, is discarded.
		}
	}
	switch {
	case actx.Err() != nil && ctx.Err() == nil:
		// Timed out, or finished past its deadline.
		elapsed := time.Since(start)
		log.WarnContext(ctx, "sqsadapter: node attempt timed out", "attempt", attempt, "elapsed", elapsed.Round(time.Millisecond), "timeout", timeout, "returned", returned)
		limit := fmt.Sprintf("timeout %v", timeout)
		if byDefault {
			limit = fmt.Sprintf("default timeout %v: set config.timeout or WithNodeTimeout", timeout)
		}
		err := fmt.Errorf("node %q attempt %d timed out after %v (%s)", n.id, attempt, roundElapsed(elapsed), limit)
		if r.err != nil {
			err = fmt.Errorf("%w (%v)", err, r.err)
		}
		return NodeResult{}, nil, err
	case cut:
		// The job was cancelled.
		err := context.Cause(actx)
		if r.err != nil {
			err = fmt.Errorf("%w (%v)", err, r.err)
		}
		return NodeResult{}, nil, err
	}
	return r.res, nc, r.err
}

// readKey reads a context key for NodeContext.Get: in a loop's body, as of
// the node's pass.
func (x *jobRun) readKey(ctx context.Context, key string) (any, bool, error) {
	if len(x.p.loops) == 0 {
		return x.a.cfg.contexts.Get(ctx, x.job.RunID, key)
	}
	vals, err := x.getMany(ctx, []string{key})
	v, ok := vals[key]
	return v, ok, err
}

// roundElapsed rounds d for messages: to the millisecond, or the
// microsecond below one.
func roundElapsed(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// load resolves the node's input and reads the context keys its outgoing
// expressions need, in at most one round trip in the common cases.
func (x *jobRun) load(ctx context.Context) (in any, vals map[string]any, err error) {
	n, cs, runID := x.n, x.a.cfg.contexts, x.job.RunID
	var keys []string
	carried := x.job.Input != nil || (x.inline != nil && x.inline.carried)
	switch {
	case x.job.Input != nil:
		if in, err = jsonvalue.Decode(x.job.Input); err != nil {
			return nil, nil, fmt.Errorf("%w: input: %v", ErrInvalidJob, err)
		}
	case carried:
		// The predecessor's record, as the store returned it, is this
		// handling's own (a store returns copies) and nothing else reads
		// it: the node may have it, and change it.
		in = x.inline.in
	}
	switch {
	case carried:
	case n.def.Inputs != nil:
		keys = append(keys, n.inputKeys...)
	case n.start:
		keys = append(keys, "_inputs."+n.id)
	}
	switch {
	case n.exprAll:
		vals, err = cs.Snapshot(ctx, runID)
		dropItemOutputs(vals) // batch items are no nodes (batchmap.go); loop iterations collapse (loop.go)
	case len(keys) > 0 || len(n.exprKeys) > 0:
		vals, err = x.getMany(ctx, append(keys, n.exprKeys...))
	}
	if err != nil {
		return nil, nil, err
	}
	switch {
	case carried:
	case n.transformedIn:
		// A transform on the edge that fired the node replaces its
		// "inputs" (reference §3.6).
		var transformed bool
		if in, transformed, err = x.stagedInput(ctx); err == nil && !transformed {
			in = resolveInputs(n.def.Inputs, vals)
		}
	case n.def.Inputs != nil:
		in = resolveInputs(n.def.Inputs, vals)
	case n.start:
		in = vals["_inputs."+n.id]
	default:
		in, _, err = x.stagedInput(ctx)
	}
	return in, vals, err
}

// stagedInput is the input of a node without "inputs": what its single
// predecessor staged for it (or its output); for an "any" join, what the
// predecessor that fired it staged; for an "all" join, a map of taken
// predecessor id to what each staged. transformed reports, for a node that
// is not an "all" join, that the value is an edge transform's result.
func (x *jobRun) stagedInput(ctx context.Context) (in any, transformed bool, err error) {
	preds := x.n.preds
	if x.n.join == "any" {
		sts, err := x.a.cfg.coord.GetJoins(ctx, []string{joinKey(x.job.RunID, x.n.id)})
		if err != nil {
			return nil, false, err
		}
		st := sts[joinKey(x.job.RunID, x.n.id)]
		if st == nil || st.FiredBy == "" {
			return nil, false, nil // not fired: the job is stray, and finds that out when it acquires
		}
		preds = []string{st.FiredBy}
	}
	// A loop is followed by what its last pass decided: its done record.
	rid := func(id string) string {
		if n := x.p.nodes[id]; n != nil && n.builtin == builtinLoop && n.loop != x.n.loop {
			return loopDone(id)
		}
		return id
	}
	ids := make([]string, len(preds))
	for i, id := range preds {
		ids[i] = rid(id)
	}
	recs, err := x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, ids)
	if err != nil {
		return nil, false, err
	}
	staged := func(r *store.NodeRecord) (any, bool) {
		if v, ok := r.Staged[x.n.id]; ok {
			return v, true
		}
		return r.Output, false
	}
	if x.n.join != "all" {
		if r := recs[rid(preds[0])]; r != nil && r.State == store.NodeCommitted {
			in, transformed = staged(r)
			return in, transformed, nil
		}
		return nil, false, nil
	}
	m := make(map[string]any)
	for _, id := range preds {
		if r := recs[rid(id)]; r != nil && r.State == store.NodeCommitted && slices.Contains(r.Taken, x.n.id) {
			m[nodeName(id)], _ = staged(r)
		}
	}
	return m, false, nil
}

// runFallback runs the fallback node in place of x.n, under its own
// attempt record, and commits its output as x.n's.
func (x *jobRun) runFallback(ctx context.Context, fb *planNode, in any, vals map[string]any, cause error, attempt int) outcome {
	id := fallbackRecord(x.n.id)
	if fb.iter != x.n.iter {
		// In a loop's pass, the fallback runs in that pass too.
		c := *fb
		c.iter, fb = x.n.iter, &c
	}
	x.log.InfoContext(ctx, "sqsadapter: running fallback", "fallback", fb.id, "err", cause)
	if fb.def.Inputs != nil {
		var fvals map[string]any
		err := x.idempotent(ctx, func() (err error) {
			fvals, err = x.getMany(ctx, fb.inputKeys)
			return err
		})
		if err != nil {
			return x.release(ctx, x.n.id, retryAfter(0, fmt.Errorf("sqsadapter: load input of fallback %q: %w", fb.id, err)))
		}
		in = resolveInputs(fb.def.Inputs, fvals)
	}
	rec, o, ok := x.acquire(ctx, id, 0)
	if !ok {
		return o
	}
	res, nc, fattempt, o, ok := x.attempts(ctx, fb, id, rec, in)
	if !ok {
		return o
	}
	if nc == nil {
		err := fmt.Errorf("fallback %q failed after %d attempt(s): %w (after: %v)", fb.id, fattempt, o.err, cause)
		return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.label(), Attempt: attempt, Err: err}).Error())
	}
	_ = nc.Set("_catch_error", map[string]any{"message": cause.Error(), "nodeId": nodeName(x.n.id), "blueprintId": x.p.id})
	return x.commit(ctx, res, nc, in, vals, fb.id)
}

// commit routes the result and writes it, with the node's context writes,
// once; then advances.
func (x *jobRun) commit(ctx context.Context, res NodeResult, nc *NodeContext, in any, vals map[string]any, fallback string) outcome {
	out, err := jsonvalue.Normalize(res.Output)
	if err != nil {
		return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.label(), Attempt: nc.Attempt, Err: fmt.Errorf("output: %w", err)}).Error())
	}
	sets, deletes := nc.buffered()
	c := store.NodeCommit{NodeID: x.n.id, Output: out, Action: res.Action, Fallback: fallback, Sets: sets, Deletes: deletes}
	if x.n.exprSelf {
		// Expressions may name the node itself: its output, as committed.
		sets = maps.Clone(sets)
		if sets == nil {
			sets = make(map[string]any, 1)
		}
		sets[outputsPrefix+x.n.def.ID] = out // read by id, in any pass of a loop
	}
	x.route(ctx, &c, in, overlay(vals, sets, deletes))
	if x.crash("commit") {
		return abandon
	}
	// The commit drops the lease: stop extending it first, or a heartbeat
	// between the write and its response would find the lease gone and
	// cancel this job.
	x.setLease(nil)
	var rec *store.NodeRecord
	err = x.retried(ctx, func() (err error) {
		rec, err = x.a.cfg.contexts.CommitNode(ctx, x.job.RunID, c)
		return err
	})
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNodeCommitted):
		// Another execution committed first: follow its decision.
		return x.advance(ctx, rec, true)
	case errors.Is(err, store.ErrNodeFailed):
		return x.failRun(ctx, x.n.id, rec.Error)
	case errors.Is(err, store.ErrNodeClosed):
		return done
	case errors.Is(err, ErrValueTooLarge), errors.Is(err, ErrInvalidKey):
		// The commit can never succeed: fail the node for good.
		return x.failRun(ctx, x.n.id, (&nodeError{NodeID: x.n.label(), Attempt: nc.Attempt, Err: err}).Error())
	default:
		return x.release(ctx, x.n.id, retryAfter(0, fmt.Errorf("sqsadapter: commit output of node %q: %w", x.n.id, err)))
	}
	if x.crash("committed") {
		return abandon
	}
	return x.advance(ctx, rec, false)
}

func overlay(vals, sets map[string]any, deletes []string) map[string]any {
	if len(sets) == 0 && len(deletes) == 0 {
		return vals
	}
	m := make(map[string]any, len(vals)+len(sets))
	for k, v := range vals {
		m[k] = v
	}
	for k, v := range sets {
		m[k] = v
	}
	for _, k := range deletes {
		delete(m, k)
	}
	return m
}

// route decides which outgoing edges are taken (§4.5) and computes the
// transforms of the taken ones.
//
// As in Flowcraft, whose evaluators return undefined on any error, an
// expression that fails to evaluate never fails the run: a condition that
// fails is false (the edge is not taken) and a transform that fails stages
// nil. Each failure is counted (ExpressionErrors) and logged at WARN
// once per blueprint version and edge.
func (x *jobRun) route(ctx context.Context, c *store.NodeCommit, in any, vals map[string]any) {
	if len(x.n.out) == 0 {
		return
	}
	var result map[string]any // made for the first expression evaluated
	env := func(input any) expr.Env {
		if vals == nil {
			vals = map[string]any{}
		}
		if result == nil {
			result = map[string]any{"output": c.Output, "action": c.Action}
		}
		return expr.Env{Result: result, Input: input, Context: vals}
	}
	cond := func(e *planEdge) bool {
		if e.condition == nil {
			return true
		}
		v, err := e.condition.Eval(env(in))
		if err != nil {
			x.expressionFailed(ctx, e, "condition", err)
			return false
		}
		return expr.Truthy(v)
	}
	var taken []*planEdge
	for _, defaults := range []bool{false, true} {
		if !defaults && c.Action == "" {
			continue
		}
		for _, e := range x.n.out {
			if (e.action == "") != defaults || (!defaults && e.action != c.Action) {
				continue
			}
			if cond(e) {
				taken = append(taken, e)
			}
		}
		if len(taken) > 0 {
			break
		}
	}
	for _, e := range taken {
		if !slices.Contains(c.Taken, e.target.id) {
			c.Taken = append(c.Taken, e.target.id)
		}
		if e.transform == nil {
			continue
		}
		v, err := e.transform.Eval(env(x.transformInput(e, c.Output, vals)))
		if err == nil {
			v, err = jsonvalue.Normalize(v)
		}
		if err != nil {
			x.expressionFailed(ctx, e, "transform", err)
			v = nil
		}
		if c.Staged == nil {
			c.Staged = make(map[string]any)
		}
		c.Staged[e.target.id] = v
	}
	// Keep Taken in blueprint order of targets, so replays are identical.
	slices.SortFunc(c.Taken, func(a, b string) int { return x.targetIndex(a) - x.targetIndex(b) })
}

// transformInput is the value an edge's transform transforms (reference
// §3.6): the source's output, except when the target's "inputs" is a string
// naming another key that is present — then that key's value.
func (x *jobRun) transformInput(e *planEdge, output any, vals map[string]any) any {
	key := transformKey(e.target, x.n.id)
	if key == "" || key == outputsPrefix+x.n.id {
		return output
	}
	if v, ok := vals[key]; ok {
		return v
	}
	return output
}

// expressionFailed counts an expression that failed to evaluate and logs
// it the first time it fails for this blueprint version and edge.
func (x *jobRun) expressionFailed(ctx context.Context, e *planEdge, what string, err error) {
	x.a.expressionErrors.Add(1)
	if !e.warned.CompareAndSwap(false, true) {
		return
	}
	prog, as := e.condition, "false: the edge is not taken"
	if what == "transform" {
		prog, as = e.transform, "nil: the target's input is nil"
	}
	x.log.WarnContext(ctx, "sqsadapter: an edge "+what+" failed to evaluate and counts as "+as+
		"; later failures of this edge are counted (ExpressionErrors), not logged",
		"edge", fmt.Sprintf("#%d %s -> %s", e.index, x.n.id, e.target.id),
		"blueprint_version", x.p.version, "expression", prog.String(), "err", err)
}

func (x *jobRun) targetIndex(id string) int {
	for i, t := range x.n.targets {
		if t.id == id {
			return i
		}
	}
	return -1
}

// advance makes durable everything that follows from a committed record:
// successor jobs, join arrivals, skips, and completion. It is idempotent, so
// a redelivery replays it. On a replay, successors that are already
// resolved get no new job, which keeps duplicates from cascading.
func (x *jobRun) advance(ctx context.Context, rec *store.NodeRecord, replay bool) outcome {
	if rec != nil && rec.State == store.NodeSkipped {
		return done // resolved without running: nothing follows from it here
	}
	if x.n.builtin == builtinScatter && x.n.batch != nil {
		return x.advanceBatch(ctx, rec, replay) // a batch's items (batchmap.go)
	}
	if rec == nil || rec.State != store.NodeCommitted {
		// Skipped nodes get no job; a record in another state here is a bug
		// in a store.
		return retryAfter(0, fmt.Errorf("sqsadapter: node %q: unexpected record state %v", x.n.id, rec))
	}
	x.leavesDone, x.joinsDone, x.skipping = nil, nil, nil // made on first use (mark)
	x.committed = rec
	var known map[string]*store.NodeRecord
	if replay && len(x.n.targets) > 0 {
		ids := make([]string, len(x.n.targets))
		for i, t := range x.n.targets {
			ids[i] = t.id
		}
		err := x.idempotent(ctx, func() (err error) {
			known, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, ids)
			return err
		})
		if err != nil {
			return retryAfter(0, err)
		}
	}
	needsJob := func(t *planNode) bool {
		r := known[t.id]
		return r == nil || r.State == store.NodePending
	}
	source, loopEnds := x.n.id, false
	if x.n.builtin == builtinLoop {
		// A pass that continues sends the next iteration and leaves the
		// loop's exits to the pass that breaks; that one writes the loop's
		// done record before anything after the loop can read it.
		source, loopEnds = x.n.def.ID, true
		for _, t := range x.n.targets {
			loopEnds = loopEnds && !(x.n.isContinue(t) && slices.Contains(rec.Taken, t.id))
		}
		if loopEnds {
			if err := x.loopEnded(ctx, rec); err != nil {
				return retryAfter(0, err)
			}
		}
	}
	for _, t := range x.n.targets {
		taken := slices.Contains(rec.Taken, t.id)
		if x.n.builtin == builtinLoop && (x.n.isContinue(t) || !loopEnds) {
			if x.n.isContinue(t) && taken {
				x.successor(ctx, t, rec, known, needsJob) // the next iteration
			}
			continue // a continue edge not taken leads nowhere; exits wait for the last pass
		}
		if !t.isJoin() {
			if !taken {
				if err := x.skip(ctx, t); err != nil {
					return retryAfter(0, err)
				}
			} else {
				x.successor(ctx, t, rec, known, needsJob)
			}
			continue
		}
		if err := x.arrive(ctx, t, source, taken, needsJob); err != nil {
			return retryAfter(0, err)
		}
		if x.crash("arrived") {
			return abandon
		}
	}
	if x.n.leaf {
		x.final = true
		mark(&x.leavesDone, x.n.id)
	}
	if loopEnds && !x.n.loop.exits {
		x.final = true
		mark(&x.leavesDone, loopDone(x.n.loop.id))
	}
	if err := x.flush(ctx); err != nil {
		return retryAfter(0, err)
	}
	if x.crash("advanced") {
		return abandon
	}
	if x.final {
		if err := x.checkCompletion(ctx); err != nil {
			return retryAfter(0, err)
		}
	} else if len(x.skipped) > 0 && x.a.cfg.retention > 0 {
		if err := x.expireAfterSkips(ctx); err != nil {
			return retryAfter(0, err)
		}
	}
	return done
}

// expireAfterSkips gives this handling's skip records their expiry if the
// run finished meanwhile: another handling may have completed the run and
// set its expiry between this one's join arrivals and its skip writes
// (dead-path records of nodes the completion did not need). Either the
// read here sees the run finished, after the skips, or the run finishes
// after it, and the finisher's expiry, which follows its status write,
// finds the skip records. A run deleted meanwhile gets its records
// tombstoned again, for the same reason. Only with a retention: one read.
func (x *jobRun) expireAfterSkips(ctx context.Context) error {
	var rec *store.RunRecord
	err := x.idempotent(ctx, func() (err error) {
		rec, err = x.a.cfg.contexts.GetRun(ctx, x.job.RunID)
		return err
	})
	switch {
	case errors.Is(err, ErrRunNotFound):
		// Deleted (or expired) while this handling ran: its skip records
		// may have landed after the deletion's tombstones, so they become
		// tombstones too (the store handles a tombstoned run's records all
		// the same, then answers ErrRunNotFound).
		if x.crash("expire") {
			return errCrashed
		}
		err := x.idempotent(ctx, func() error {
			return x.a.cfg.contexts.DeleteRun(ctx, x.job.RunID, time.Now().Add(tombstoneTTL))
		})
		if err != nil && !errors.Is(err, ErrRunNotFound) {
			return fmt.Errorf("sqsadapter: tombstone skips of a deleted run: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("sqsadapter: read run after skips: %w", err)
	case rec.Status == StatusRunning:
		return nil
	}
	return x.expireRun(ctx, rec.FinishedAt)
}

// successor acts on t, a taken target of the committed record rec with no
// other predecessor: t's job is sent if t still needs it, or becomes the
// next job of this message's chain; a t that ran may be followed (chain.go).
func (x *jobRun) successor(ctx context.Context, t *planNode, rec *store.NodeRecord, known map[string]*store.NodeRecord, needsJob func(*planNode) bool) {
	only := onlySuccessor(t, rec)
	if !needsJob(t) {
		if only {
			x.follow(t, known[t.id])
		}
		return
	}
	if only {
		v, carry := stagedFor(t, rec)
		if x.chainTo(ctx, t, v, carry) {
			return
		}
	}
	x.sendTo(t, rec)
}

// stagedFor is the input rec staged for target t, and whether t's job
// carries it: when t has no "inputs" or the edge transformed it.
func stagedFor(t *planNode, rec *store.NodeRecord) (v any, carry bool) {
	v, transformed := rec.Staged[t.id]
	if !transformed {
		v = rec.Output
	}
	return v, t.def.Inputs == nil || transformed
}

// sendTo queues the job of target t, whose input is what rec staged for it
// (a single-predecessor node, or an "any" join rec fired), carrying that
// input when t has no "inputs" and the input is small.
func (x *jobRun) sendTo(t *planNode, rec *store.NodeRecord) {
	v, carry := stagedFor(t, rec)
	j := inlineJob{job: x.jobFor(t), in: v, carried: carry}
	x.sends = append(x.sends, j.sendable(x.a.cfg.maxInlineInput))
}

// arrive records source's resolved edge into join t and acts on the join
// record: fire it, skip it, or note that an "any" join is complete.
func (x *jobRun) arrive(ctx context.Context, t *planNode, source string, taken bool, needsJob func(*planNode) bool) error {
	var st *store.JoinState
	err := x.idempotent(ctx, func() (err error) {
		st, err = x.a.cfg.coord.Arrive(ctx, joinKey(x.job.RunID, t.id), store.Arrival{Source: source, Taken: taken, Claim: taken && t.join == "any"}, x.a.cfg.coordinationTTL)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqsadapter: arrive at join %q: %w", t.id, err)
	}
	complete := len(st.Arrived) >= len(t.preds)
	switch t.join {
	case "any":
		if taken && st.FiredBy == source && needsJob(t) {
			x.sendTo(t, x.committed) // its input is what this source staged
		}
		if complete {
			x.final = true
			mark(&x.joinsDone, t.id)
			if len(st.Taken) == 0 {
				return x.skip(ctx, t)
			}
		}
	default:
		if complete {
			if len(st.Taken) == 0 {
				return x.skip(ctx, t)
			}
			if needsJob(t) {
				x.sends = append(x.sends, x.jobFor(t))
			}
		}
	}
	return nil
}

// skip resolves t without running it (dead-path elimination) and
// propagates dead edges from it.
func (x *jobRun) skip(ctx context.Context, t *planNode) error {
	if x.skipping[t.id] {
		// Reached again through another dead path (on a replay every
		// arrival finds its join complete): propagating twice would make
		// the work exponential in stacked diamonds.
		return nil
	}
	mark(&x.skipping, t.id)
	// Every skipped node gets a record, so that a stray job for it finds
	// it resolved instead of running it.
	x.skipped = append(x.skipped, t.id)
	if t.leaf {
		x.final = true
		mark(&x.leavesDone, t.id)
	}
	source := t.id
	if t.builtin == builtinLoop {
		// A skipped pass ends its loop: the next iteration does not exist,
		// and the exits are dead.
		source = t.def.ID
		x.skipped = append(x.skipped, loopDone(t.def.ID))
		if !t.loop.exits {
			x.final = true
			mark(&x.leavesDone, loopDone(t.def.ID))
		}
	}
	for _, u := range t.targets {
		if t.isContinue(u) {
			continue
		}
		if !u.isJoin() {
			if err := x.skip(ctx, u); err != nil {
				return err
			}
			continue
		}
		if err := x.arrive(ctx, u, source, false, func(*planNode) bool { return true }); err != nil {
			return err
		}
	}
	return nil
}

// mark sets (*m)[id], making the map on first use: most handlings need
// none of advance's maps.
func mark(m *map[string]bool, id string) {
	if *m == nil {
		*m = make(map[string]bool)
	}
	(*m)[id] = true
}

// jobFor is the job of node t of x's run.
func (x *jobRun) jobFor(t *planNode) Job {
	return Job{RunID: x.job.RunID, BlueprintID: x.p.id, NodeID: t.def.ID, BlueprintVersion: x.p.version, Iter: t.iter}
}

// flush makes the skips and sends of this handling durable.
func (x *jobRun) flush(ctx context.Context) error {
	if len(x.skipped) > 0 {
		if err := x.idempotent(ctx, func() error { return x.a.cfg.contexts.SkipNodes(ctx, x.job.RunID, x.skipped) }); err != nil {
			return fmt.Errorf("sqsadapter: skip nodes: %w", err)
		}
	}
	if len(x.sends) > 0 {
		if err := x.a.send(ctx, x.sends...); err != nil {
			return err
		}
	}
	return nil
}

// checkCompletion completes the run if every leaf is resolved and every
// "any" join has heard from all its predecessors.
func (x *jobRun) checkCompletion(ctx context.Context) error {
	var leaves, joins []string
	for _, l := range x.p.leaves {
		if !x.leavesDone[l.id] {
			leaves = append(leaves, l.id)
		}
	}
	for _, j := range x.p.anyJoins {
		if !x.joinsDone[j.id] {
			joins = append(joins, joinKey(x.job.RunID, j.id))
		}
	}
	if len(leaves) > 0 {
		var recs map[string]*store.NodeRecord
		err := x.idempotent(ctx, func() (err error) {
			recs, err = x.a.cfg.contexts.GetNodes(ctx, x.job.RunID, leaves)
			return err
		})
		if err != nil {
			return err
		}
		for _, id := range leaves {
			if r := recs[id]; r == nil || (r.State != store.NodeCommitted && r.State != store.NodeSkipped) {
				return nil
			}
		}
	}
	if len(joins) > 0 {
		var sts map[string]*store.JoinState
		err := x.idempotent(ctx, func() (err error) {
			sts, err = x.a.cfg.coord.GetJoins(ctx, joins)
			return err
		})
		if err != nil {
			return err
		}
		for _, j := range x.p.anyJoins {
			if x.joinsDone[j.id] {
				continue
			}
			if st := sts[joinKey(x.job.RunID, j.id)]; st == nil || len(st.Arrived) < len(j.preds) {
				return nil
			}
		}
	}
	if x.crash("complete") {
		return errCrashed
	}
	at := time.Now()
	err := x.a.cfg.contexts.FinishRun(ctx, x.job.RunID, StatusCompleted, "", "", at)
	switch {
	case err == nil:
		x.log.InfoContext(ctx, "sqsadapter: run completed")
	case errors.Is(err, ErrRunFinished):
		at = time.Time{} // finished by an earlier handling, at its time
	default:
		return fmt.Errorf("sqsadapter: complete run: %w", err)
	}
	if err := x.idempotent(ctx, func() error { return x.a.notifyParent(ctx, x.job.RunID, err == nil) }); err != nil {
		return err
	}
	return x.expireRun(ctx, at)
}

// expireRun gives the items of the job's finished run their expiry (see
// SqsAdapter.expireRun), after the crash point "expire". It is the last
// step of every handling that finishes a run, or finds it finished: a
// crash before it leaves the job to be redelivered, and its replay comes
// here again.
func (x *jobRun) expireRun(ctx context.Context, finishedAt time.Time) error {
	if x.a.cfg.retention <= 0 {
		return nil
	}
	if x.crash("expire") {
		return errCrashed
	}
	return x.idempotent(ctx, func() error { return x.a.expireRun(ctx, x.job.RunID, finishedAt) })
}

// failRun fails the run because nodeID failed for good. It first makes
// the node's failure durable on its own record (FailNode), so that a crash
// anywhere after leaves the job to resume here on redelivery rather than
// run the node again; then it closes the run's other unfinished nodes, so
// that once the status says failed no node of the run can commit; then it
// writes the status, once. Two nodes failing at once each mark their own
// record, neither can close the other's, and one of them writes the status.
func (x *jobRun) failRun(ctx context.Context, nodeID, reason string) outcome {
	cs := x.a.cfg.contexts
	var rec *store.NodeRecord
	// The failure is the one write whose content a redelivery cannot
	// recompute (a Permanent error, the attempt's message): it gets twice
	// the tries of other calls before the job is left to be redelivered.
	err := x.retryN(ctx, 2*storeTries, func() (err error) {
		rec, err = cs.FailNode(ctx, x.job.RunID, x.failedRecord(nodeID), reason)
		return err
	}, func(err error) bool { return isDecision(err) || errors.Is(err, ErrRunFinished) })
	switch {
	case err == nil:
		reason = rec.Error // the first recorded reason wins
		if x.span != nil {
			x.span.Failed(nodeName(nodeID), reason)
		}
	case errors.Is(err, store.ErrNodeCommitted) && x.n == nil:
		// The job names a node its blueprint lacks, but the run has it
		// committed: the job is not of this run's blueprint.
		x.log.ErrorContext(ctx, "sqsadapter: job names a node its blueprint lacks but its run has committed; dropped")
		return done
	case errors.Is(err, store.ErrNodeCommitted):
		// Another execution committed the node first: follow its decision.
		return x.advance(ctx, rec, true)
	case errors.Is(err, store.ErrNodeClosed):
		return done // the run was failed or cancelled by another node
	case errors.Is(err, store.ErrNodeWaiting):
		// Another execution made the node wait (this one's lease had
		// expired): the node did not fail.
		return done
	default:
		return retryAfter(0, fmt.Errorf("sqsadapter: mark node %q failed: %w", nodeID, err))
	}
	if x.crash("failing") {
		return abandon
	}
	if x.toleratedItem() {
		return x.itemResolved(ctx, true) // a batch item whose failure is tolerated (batchmap.go)
	}
	if err := x.idempotent(ctx, func() error { return cs.CloseNodes(ctx, x.job.RunID, x.p.closeIDs) }); err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: close nodes of failing run: %w", err))
	}
	if err := x.a.closeBatchItems(ctx, x.p, x.job.RunID, func(call func() error) error { return x.idempotent(ctx, call) }); err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: close batch items of failing run: %w", err))
	}
	if err := x.a.closeLoops(ctx, x.p, x.job.RunID, func(call func() error) error { return x.idempotent(ctx, call) }); err != nil {
		return retryAfter(0, fmt.Errorf("sqsadapter: close loop iterations of failing run: %w", err))
	}
	if x.crash("closed") {
		return abandon
	}
	at := time.Now()
	err = x.retried(ctx, func() error {
		return cs.FinishRun(ctx, x.job.RunID, StatusFailed, reason, nodeName(nodeID), at)
	})
	switch {
	case err == nil:
		x.log.ErrorContext(ctx, "sqsadapter: run failed", "failed_node", nodeID, "reason", reason)
	case errors.Is(err, ErrRunFinished):
		at = time.Time{} // finished by an earlier handling, at its time
	default:
		return retryAfter(0, fmt.Errorf("sqsadapter: mark run failed: %w", err))
	}
	if x.crash("failed") {
		return abandon
	}
	// A failed run's children stop; its parent hears of it.
	if err := x.a.cancelChildren(ctx, x.job.RunID, x.p, "parent run failed"); err != nil {
		return retryAfter(0, err)
	}
	finished := err == nil
	if err := x.idempotent(ctx, func() error { return x.a.notifyParent(ctx, x.job.RunID, finished) }); err != nil {
		return retryAfter(0, err)
	}
	switch err := x.expireRun(ctx, at); {
	case errors.Is(err, errCrashed):
		return abandon
	case err != nil:
		return retryAfter(0, err)
	}
	return done
}

// storeTries is how many times a store call is tried in one handling
// before the job gives up and leaves its message to be redelivered.
const storeTries = 4

// storeBackoff is the wait before try+1 of a store call: 10ms, 40ms, 90ms.
func storeBackoff(try int) time.Duration {
	return time.Duration((try+1)*(try+1)) * 10 * time.Millisecond
}

// idempotent runs an idempotent store call, trying it up to storeTries
// times: a job can take many calls, and a failure of any of them otherwise
// costs a redelivery that repeats them all — and, between a node's lease
// and its commit, an attempt. An invalid job is not tried again.
func (x *jobRun) idempotent(ctx context.Context, call func() error) error {
	return x.retry(ctx, call, func(err error) bool { return errors.Is(err, ErrInvalidJob) })
}

// retried is idempotent for a conditional write whose refusals are
// answers, not faults: it stops at the first of those.
func (x *jobRun) retried(ctx context.Context, call func() error) error {
	return x.retry(ctx, call, func(err error) bool { return isDecision(err) || errors.Is(err, ErrRunFinished) })
}

// retry tries call up to storeTries times, waiting storeBackoff between
// tries, until it succeeds, ctx ends or final says its error is an answer.
func (x *jobRun) retry(ctx context.Context, call func() error, final func(error) bool) error {
	return x.retryN(ctx, storeTries, call, final)
}

// retryN is retry with tries tries.
func (x *jobRun) retryN(ctx context.Context, tries int, call func() error, final func(error) bool) error {
	var err error
	for try := range tries {
		if try > 0 && !x.a.sleep(ctx, storeBackoff(try-1)) {
			break
		}
		if err = call(); err == nil || ctx.Err() != nil || final(err) {
			return err
		}
	}
	return err
}

// joinKey names the coordination record of join nodeID in run runID, in
// the Flowcraft style "flowcraft:fanin:<runId>:<nodeId>", with "%" and ":"
// escaped in both ids ("%25", "%3A") so that no two (run, node) pairs
// share a key: run "r:x" with node "j" and run "r" with node "x:j" differ.
// Ids without those characters appear as they are.
func joinKey(runID, nodeID string) string {
	return "flowcraft:fanin:" + keyEscaper.Replace(runID) + ":" + keyEscaper.Replace(nodeID)
}

var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// fallbackRecord names the attempt record of node id's fallback: the node
// id, U+001F and "fallback". Node ids cannot hold control characters, so
// no node's own record has this name.
func fallbackRecord(id string) string { return id + fallbackSuffix }

// fallbackSuffix ends the id of a fallback's attempt record.
const fallbackSuffix = "\x1ffallback"

// retryDelay is the delay before the attempt after attempt n.
func (a *SqsAdapter) retryDelay(n *planNode, attempt int) time.Duration {
	d := float64(n.retryDelay)
	for i := 1; i < attempt; i++ {
		d *= a.cfg.retryMultiplier
		if d >= float64(a.cfg.retryMaxDelay) {
			break
		}
	}
	d = min(d, float64(a.cfg.retryMaxDelay))
	if j := a.cfg.retryJitter; j > 0 {
		d *= 1 + j*(2*rand.Float64()-1)
	}
	return time.Duration(d)
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}
