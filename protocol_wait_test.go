package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/store"
)

// Waiting nodes in the randomized protocol test. The generator makes a
// share of the main nodes built-ins (protoWaiting): wait nodes, some
// paired with a webhook predecessor, webhook nodes, and sleeps. For each
// run, a resumer (protoSession.resumer) polls GetRun and resumes every node
// it sees waiting for an outside event with the interpreter's answer
// (Result.Resumes): once, twice in a row, or from two or three goroutines
// at once; a webhook through DeliverWebhook, sometimes duplicated; in the
// classes that cancel, sometimes racing a CancelRun. It resumes through an
// adapter on the workers' faulty stores that dies now and then inside
// ResumeRun, and retries a resume until it gets an answer. Sleeps wake by
// themselves, under the workers' crashes and faults.
//
// Beyond the comparison with the interpreter, it checks: a waiting node's
// output is committed exactly once (protoSession.finish counts the
// resumes' commits), and of the resumes of one node at most one succeeds,
// and one does in a completed run; GetRun never reports a run completed
// while a node of it waits, nor awaiting without a waiting node; a
// completed run's context holds every waiting node's output; resumes and
// deliveries once the run finished are refused with ErrNotWaiting or
// ErrRunFinished; and every run finishes.

const (
	// protoWaitShare is the share of main nodes made built-ins by default.
	protoWaitShare = 0.10
	// protoSleepMax bounds sleeps by default: sessions stay fast.
	protoSleepMax = 300 * time.Millisecond
)

func (sh protoShape) waitShare() float64 {
	switch {
	case sh.waits < 0:
		return 0
	case sh.waits == 0:
		return protoWaitShare
	}
	return sh.waits
}

func (sh protoShape) sleepBound() time.Duration {
	if sh.sleepMax == 0 {
		return protoSleepMax
	}
	return sh.sleepMax
}

// TestProtocolRandomWaiting runs blueprints a third of whose nodes wait,
// under the chaos of TestProtocolRandom, cancelling a share of the runs
// (half of those while a resume is under way).
func TestProtocolRandomWaiting(t *testing.T) {
	runProtoSession(t, protocolSeed(t), protoWaitingClass(protoRuns(60, 20), protoSleepMax), newProtoEnv)
}

// protoWaitingClass is TestProtocolRandomWaiting's class: its workers die
// more often right before a node suspends and before a sleep's resume.
func protoWaitingClass(n int, sleepMax time.Duration) protoClass {
	weights := maps.Clone(protoCrashWeights)
	weights["suspend"], weights["resume"] = 10, 10
	return protoClass{name: "waiting", runs: n, cancel: 0.3, shape: protoShape{waits: 0.35, sleepMax: sleepMax},
		chaos: protoChaos{faultRate: 0.05, crashRate: 0.10, duplicateRate: 0.10, crashWeights: weights}}
}

// protoResume is the resume oracle: a wait or webhook node is resumed with
// what its params would make a node function return (no context writes; a
// webhook with no action, as a delivery carries none).
func protoResume(c interp.Call) interp.Outcome {
	p := maps.Clone(c.Def.Params)
	p["kind"] = "ok"
	out, action, _, err := protoBehave(c.NodeID, p, c.Input, 1)
	if err != nil {
		return interp.Outcome{Err: err}
	}
	if c.Def.Uses == interp.BuiltinWebhook {
		action = ""
	}
	return interp.Outcome{Output: out, Action: action}
}

// protoWaiting makes about share of the main nodes (those without a
// fallback) built-ins. The determinism the generator keeps holds: a wait
// or webhook node's output is the oracle's, computed like a node
// function's from its params and input (ignored by an "any" join), and
// writes nothing; a sleep, and a wait paired with a webhook predecessor,
// output their input, so an "any" join is never one of them. Sleeps last
// 0 to sleepMax.
func protoWaiting(c *protoCase, r *rand.Rand, share float64, sleepMax time.Duration) {
	if share <= 0 {
		return
	}
	bp := c.bp
	fbOnly := protoFallbackOnly(bp)
	preds := map[string][]string{}
	for _, e := range bp.Edges {
		if !slices.Contains(preds[e.Target], e.Source) {
			preds[e.Target] = append(preds[e.Target], e.Source)
		}
	}
	kinds := map[string]string{}
	for i := range bp.Nodes {
		d := &bp.Nodes[i]
		if fbOnly[d.ID] || d.Config.Fallback != "" || r.Float64() >= share {
			continue
		}
		anyJoin := d.Config.JoinStrategy == "any" && len(preds[d.ID]) > 1
		kind := protoPick(r, []string{interp.BuiltinWait, interp.BuiltinWebhook, interp.BuiltinSleep}, []int{45, 30, 25})
		if anyJoin && kind == interp.BuiltinSleep {
			kind = interp.BuiltinWait
		}
		kinds[d.ID] = kind
		d.Uses = kind
		p := maps.Clone(d.Params)
		delete(p, "write") // a resume writes nothing
		switch kind {
		case interp.BuiltinWait:
			if r.IntN(2) == 0 {
				p["eventName"] = "approval-" + d.ID
			}
		case interp.BuiltinSleep:
			p = map[string]any{"duration": r.Int64N(sleepMax.Milliseconds() + 1)}
			if s := sleepMax / time.Second; r.IntN(8) == 0 {
				p["duration"] = fmt.Sprintf("%ds", r.Int64N(int64(s)+1)) // Flowcraft's syntax
			}
		}
		d.Params = p
	}
	// Pair some wait nodes with a webhook predecessor: they pass the
	// delivery on without waiting.
	for i := range bp.Nodes {
		d := &bp.Nodes[i]
		if kinds[d.ID] != interp.BuiltinWait || d.Config.JoinStrategy == "any" && len(preds[d.ID]) > 1 {
			continue
		}
		for _, p := range preds[d.ID] {
			if kinds[p] == interp.BuiltinWebhook && r.IntN(2) == 0 {
				d.Params["eventName"] = "webhook:" + p
				break
			}
		}
	}
}

// protoWaits is what the resumer did for one run, by node.
type protoWaits struct {
	mu   sync.Mutex
	r    *rand.Rand
	seen map[string]string // node → the reason it was seen waiting for
	ok   map[string]int    // resumes and deliveries that succeeded
	// unsure counts the calls that failed in a way that leaves their effect
	// open (a fault after the commit, a resumer that died): a later one is
	// refused, although the node was resumed.
	unsure map[string]int
	// hooks are the webhook ids delivered to, by node.
	hooks map[string]string
	// raced: the run's raceCancel was closed.
	raced bool

	resumed, delivered, visits atomic.Int64
}

func newProtoWaits() *protoWaits {
	return &protoWaits{r: rand.New(rand.NewPCG(rand.Uint64(), 0x3a17)), seen: map[string]string{}, ok: map[string]int{},
		unsure: map[string]int{}, hooks: map[string]string{}}
}

func (w *protoWaits) intN(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.r.IntN(n)
}

// protoResumeWait is the resumer's polling interval.
const protoResumeWait = 10 * time.Millisecond

// resumer resumes the nodes of run r that wait for an outside event,
// until the run finishes or stop is closed, checking what GetRun reports
// on the way. It returns once every resume it started has ended.
func (s *protoSession) resumer(ctx context.Context, r *protoRun, stop <-chan struct{}) {
	e := s.e
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-stop:
			return
		case <-time.After(protoResumeWait):
		}
		st, err := e.client.GetRun(ctx, r.runID)
		if err != nil {
			continue
		}
		r.waits.visits.Add(1)
		var waiting []string
		for id, ns := range st.Nodes {
			if ns.State == "waiting" {
				waiting = append(waiting, id)
			}
		}
		slices.Sort(waiting)
		switch {
		case st.Status == sqsadapter.StatusCompleted && len(waiting) > 0:
			s.report(r, "GetRun reports the run completed while nodes %v wait", waiting)
		case st.Status == sqsadapter.StatusAwaiting && len(waiting) == 0:
			s.report(r, "GetRun reports the run awaiting, but no node waits: %v", st.Nodes)
		}
		if st.Finished() {
			return
		}
		for _, id := range waiting {
			w := st.Nodes[id].Wait
			if w == nil {
				s.report(r, "node %s waits without a Wait", id)
				continue
			}
			if w.Reason != "external_event" && w.Reason != "webhook" {
				continue // a sleep wakes by itself
			}
			r.waits.mu.Lock()
			_, seen := r.waits.seen[id]
			r.waits.seen[id] = w.Reason
			r.waits.mu.Unlock()
			if seen {
				continue
			}
			want, ok := r.exp.Resumes[id]
			if !ok {
				s.report(r, "node %s waits (%+v), but the interpreter does not resume it (it has it %q)", id, *w, r.exp.States[id])
				continue
			}
			wg.Go(func() { s.resumeNode(ctx, r, id, *w, want) })
		}
	}
}

// resumeNode resumes one waiting node with the interpreter's answer: once,
// twice in a row, or from two or three goroutines at once; a webhook
// mostly by delivery.
func (s *protoSession) resumeNode(ctx context.Context, r *protoRun, id string, w store.Wait, want interp.Outcome) {
	e := s.e
	a := e.resumer
	if a == nil {
		a = e.client
	}
	deliver := w.Reason == "webhook" && r.waits.intN(5) != 0
	if deliver {
		r.waits.mu.Lock()
		r.waits.hooks[id] = w.WebhookID
		r.waits.mu.Unlock()
	}
	call := func() error {
		if deliver {
			r.waits.delivered.Add(1)
			return a.DeliverWebhook(ctx, w.WebhookID, want.Output)
		}
		r.waits.resumed.Add(1)
		return a.ResumeRun(ctx, r.runID, id, want.Output, want.Action)
	}
	if r.raceCancel != nil {
		r.waits.mu.Lock()
		if !r.waits.raced {
			r.waits.raced = true
			close(r.raceCancel)
		}
		r.waits.mu.Unlock()
	}
	switch r.waits.intN(3) {
	case 0:
		s.resumeOnce(ctx, r, id, call)
	case 1:
		s.resumeOnce(ctx, r, id, call)
		s.resumeOnce(ctx, r, id, call)
	default:
		var wg sync.WaitGroup
		for range 2 + r.waits.intN(2) {
			wg.Go(func() { s.resumeOnce(ctx, r, id, call) })
		}
		wg.Wait()
	}
}

// resumeOnce makes one resume, retrying it until it gets an answer: it
// succeeds, or is refused with ErrNotWaiting or ErrRunFinished.
func (s *protoSession) resumeOnce(ctx context.Context, r *protoRun, id string, call func() error) {
	for try := 0; ; try++ {
		err := call()
		switch {
		case err == nil:
			r.waits.mu.Lock()
			r.waits.ok[id]++
			r.waits.mu.Unlock()
			return
		case errors.Is(err, sqsadapter.ErrNotWaiting), errors.Is(err, sqsadapter.ErrRunFinished):
			return
		case ctx.Err() != nil:
			return
		case try == 200:
			s.report(r, "resume of node %s: no answer after %d tries: %v", id, try+1, err)
			return
		}
		r.waits.mu.Lock()
		r.waits.unsure[id]++
		r.waits.mu.Unlock()
		time.Sleep(time.Duration(1+r.waits.intN(10)) * time.Millisecond)
	}
}

// checkWaits checks a finished run's waiting nodes: each resumed at most
// once by the calls that reported success, and, in a completed run, every
// node the interpreter resumes resumed once and its output in the context;
// then it resumes and delivers again, which must be refused.
func (s *protoSession) checkWaits(ctx context.Context, r *protoRun) {
	w := r.waits
	w.mu.Lock()
	ok, unsure, seen, hooks := maps.Clone(w.ok), maps.Clone(w.unsure), maps.Clone(w.seen), maps.Clone(w.hooks)
	w.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(ok)) {
		if ok[id] > 1 {
			s.report(r, "node %s: %d resumes succeeded, not one", id, ok[id])
		}
	}
	if r.st.Status == sqsadapter.StatusCompleted {
		var waiting []string
		for id, ns := range r.st.Nodes {
			if ns.State == "waiting" {
				waiting = append(waiting, id)
			}
		}
		if len(waiting) > 0 {
			slices.Sort(waiting)
			s.report(r, "the run completed while nodes %v wait", waiting)
		}
		for _, id := range slices.Sorted(maps.Keys(r.exp.Resumes)) {
			switch {
			case seen[id] == "":
				s.report(r, "node %s was resumed, but the resumer never saw it waiting", id)
			case ok[id]+unsure[id] == 0:
				s.report(r, "node %s: the run completed, but no resume of it succeeded", id)
			}
			if _, has := r.st.Context["_outputs."+id]; !has {
				s.report(r, "the run completed without the output of waiting node %s", id)
			}
		}
	}
	// Once the run is finished, nothing resumes a node.
	for _, id := range slices.Sorted(maps.Keys(r.exp.Resumes)) {
		want := r.exp.Resumes[id]
		if err := s.e.client.ResumeRun(ctx, r.runID, id, want.Output, want.Action); !errors.Is(err, sqsadapter.ErrNotWaiting) && !errors.Is(err, sqsadapter.ErrRunFinished) {
			s.report(r, "ResumeRun of node %s once the run was %s returned %v, not ErrNotWaiting or ErrRunFinished", id, r.st.Status, err)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(hooks)) {
		if err := s.e.client.DeliverWebhook(ctx, hooks[id], "late"); !errors.Is(err, sqsadapter.ErrNotWaiting) && !errors.Is(err, sqsadapter.ErrRunFinished) {
			s.report(r, "a delivery to webhook node %s once the run was %s returned %v, not ErrNotWaiting or ErrRunFinished", id, r.st.Status, err)
		}
	}
}
