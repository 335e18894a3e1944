package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/store"
)

// The ways the driver resumes a waiting node (ResumeTally.Mode).
const (
	ModeOnce       = "once"       // one call
	ModeRepeated   = "repeated"   // two calls, one after the other
	ModeConcurrent = "concurrent" // 2-4 calls at once
	ModeCancel     = "cancel"     // one call racing a CancelRun of the run
)

// ResumeTally is what the driver's calls did to one waiting node: how
// many calls it made and how each answered. Every call of a node carries
// the same output and action (the model's), so the run's outcome does not
// depend on which one wins; the ledger tells how many took effect.
type ResumeTally struct {
	Kind       string // "wait" or "webhook"
	Mode       string
	Calls      int
	Succeeded  int // answered nil: this call resumed the node
	NotWaiting int // refused with ErrNotWaiting: another call resumed it
	Finished   int // refused with ErrRunFinished alone: the run was over
	Failed     int // other errors (injected faults): retried
	Errors     []string
}

// resumer is the driver's resumer: for each run it polls GetRun and resumes
// the waiting nodes as a host would — ResumeRun for a wait node,
// DeliverWebhook with the node's webhook id for a webhook node — through
// its own adapter, whose requests pass the fault-injecting proxies like the
// workers'. It is not killed. Some resumes are repeated, some concurrent,
// some race a CancelRun of their run; some calls probe what must be
// refused: a resume of a sleeping node, a delivery to an unknown webhook.
type resumer struct {
	a        *sqsadapter.SqsAdapter
	seed     uint64
	interval time.Duration
	// cancelRate is the share of the runs whose first resume races a
	// CancelRun.
	cancelRate float64

	mu      sync.Mutex
	tallies map[RunNode]*ResumeTally
	probes  []string // refusals that did not happen
	cancels map[string]*cancelTally
	wg      sync.WaitGroup
}

// cancelTally is what the driver's CancelRun calls of one run answered.
type cancelTally struct {
	Calls, Succeeded, Finished, Failed int
}

func newResumer(a *sqsadapter.SqsAdapter, seed uint64, cancelRate float64) *resumer {
	return &resumer{a: a, seed: seed, interval: 700 * time.Millisecond, cancelRate: cancelRate,
		tallies: map[RunNode]*ResumeTally{}, cancels: map[string]*cancelTally{}}
}

// follow resumes the waiting nodes of run r until it finishes or ctx ends;
// it returns at once and runs in the background (wait for it with stop).
func (rs *resumer) follow(ctx context.Context, r *run, resumes map[string]interp.Outcome) {
	rs.wg.Go(func() {
		rng := mrand.New(mrand.NewPCG(rs.seed, 0x7e5_0000+uint64(r.i)))
		cancelFirst := rng.Float64() < rs.cancelRate
		probed := map[string]bool{}
		for ctx.Err() == nil {
			if !sleepCtx(ctx, rs.interval/2+time.Duration(rng.Int64N(int64(rs.interval)))) {
				return
			}
			gctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			st, err := rs.a.GetRun(gctx, r.id)
			cancel()
			if err != nil {
				continue // a fault: poll again
			}
			if st.Finished() {
				return
			}
			for _, id := range sortedKeys(st.Nodes) {
				ns := st.Nodes[id]
				if ns.State != "waiting" || ns.Wait == nil {
					continue
				}
				switch ns.Wait.Reason {
				case "timer":
					if !probed[id] && rng.IntN(3) == 0 {
						probed[id] = true
						rs.probeSleep(ctx, r.id, id)
					}
				case "external_event", "webhook":
					o, ok := resumes[id]
					if !ok {
						rs.problem(fmt.Sprintf("run %s: node %s waits (%s), but the interpreter does not reach it", r.id, id, ns.Wait.Reason))
						continue
					}
					mode := rs.mode(rng, r.id, id, &cancelFirst)
					rs.resume(ctx, rng, r.id, id, ns.Wait, o, mode)
				}
			}
		}
	})
}

// mode picks how to resume a node; the run's first resumed node races a
// cancel if the run was picked for that.
func (rs *resumer) mode(rng *mrand.Rand, runID, nodeID string, cancelFirst *bool) string {
	rs.mu.Lock()
	t := rs.tallies[RunNode{runID, nodeID}]
	rs.mu.Unlock()
	if t != nil {
		return t.Mode // a node retried after faults keeps its mode
	}
	if *cancelFirst {
		*cancelFirst = false
		return ModeCancel
	}
	switch n := rng.IntN(10); {
	case n < 5:
		return ModeOnce
	case n < 7:
		return ModeRepeated
	default:
		return ModeConcurrent
	}
}

// resume makes the calls of one mode to resume a waiting node, and
// records how each answered.
func (rs *resumer) resume(ctx context.Context, rng *mrand.Rand, runID, nodeID string, w *store.Wait, o interp.Outcome, mode string) {
	kind := "wait"
	call := func() error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return rs.a.ResumeRun(cctx, runID, nodeID, o.Output, o.Action)
	}
	if w.Reason == "webhook" {
		kind = "webhook"
		id := w.WebhookID
		call = func() error {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return rs.a.DeliverWebhook(cctx, id, o.Output)
		}
		if rng.IntN(8) == 0 {
			rs.probeWebhook(ctx)
		}
	}
	rs.mu.Lock()
	key := RunNode{runID, nodeID}
	if rs.tallies[key] == nil {
		rs.tallies[key] = &ResumeTally{Kind: kind, Mode: mode}
	}
	rs.mu.Unlock()

	switch mode {
	case ModeOnce:
		rs.record(key, call())
	case ModeRepeated:
		rs.record(key, call())
		rs.record(key, call())
	case ModeConcurrent:
		var wg sync.WaitGroup
		for range 2 + rng.IntN(3) {
			wg.Go(func() { rs.record(key, call()) })
		}
		wg.Wait()
	case ModeCancel:
		var wg sync.WaitGroup
		wg.Go(func() { rs.record(key, call()) })
		wg.Go(func() { rs.cancel(ctx, runID) })
		wg.Wait()
	}
}

// record counts one call's answer.
func (rs *resumer) record(key RunNode, err error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	t := rs.tallies[key]
	t.Calls++
	switch {
	case err == nil:
		t.Succeeded++
	case errors.Is(err, sqsadapter.ErrNotWaiting):
		t.NotWaiting++
	case errors.Is(err, sqsadapter.ErrRunFinished):
		t.Finished++
	default:
		t.Failed++
		if len(t.Errors) < 3 {
			t.Errors = append(t.Errors, err.Error())
		}
	}
}

// cancel cancels a run, retrying through faults until the run is
// finished.
func (rs *resumer) cancel(ctx context.Context, runID string) {
	for try := 0; try < 10 && ctx.Err() == nil; try++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := rs.a.CancelRun(cctx, runID, "chaos: cancelled while a node waits")
		cancel()
		rs.mu.Lock()
		c := rs.cancels[runID]
		if c == nil {
			c = &cancelTally{}
			rs.cancels[runID] = c
		}
		c.Calls++
		switch {
		case err == nil:
			c.Succeeded++
		case errors.Is(err, sqsadapter.ErrRunFinished):
			c.Finished++
		default:
			c.Failed++
		}
		rs.mu.Unlock()
		if err == nil || errors.Is(err, sqsadapter.ErrRunFinished) {
			return
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// probeSleep checks that ResumeRun refuses a sleeping node: only its timer
// wakes it.
func (rs *resumer) probeSleep(ctx context.Context, runID, nodeID string) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := rs.a.ResumeRun(cctx, runID, nodeID, "not from the timer", "")
	if err == nil {
		rs.problem(fmt.Sprintf("run %s: ResumeRun resumed the sleeping node %s", runID, nodeID))
	}
}

// probeWebhook checks that a delivery to an id no node waits with is
// refused.
func (rs *resumer) probeWebhook(ctx context.Context) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rs.a.DeliverWebhook(cctx, hex.EncodeToString(b), map[string]any{"status": "forged"}); err == nil {
		rs.problem("a delivery to an unknown webhook id was accepted")
	}
}

func (rs *resumer) problem(p string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.probes) < 50 {
		rs.probes = append(rs.probes, p)
	}
}

// stop waits for the resumer's goroutines; cancel their ctx first.
func (rs *resumer) stop() { rs.wg.Wait() }

// Tallies returns the tallies of a run's nodes.
func (rs *resumer) Tallies(runID string) map[string]ResumeTally {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := map[string]ResumeTally{}
	for k, t := range rs.tallies {
		if k.Run == runID {
			c := *t
			c.Errors = append([]string(nil), t.Errors...)
			out[k.Node] = c
		}
	}
	return out
}

// cancelled returns the CancelRun tally of a run, or nil if the driver did
// not cancel it.
func (rs *resumer) cancelled(runID string) *cancelTally {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if c := rs.cancels[runID]; c != nil {
		cc := *c
		return &cc
	}
	return nil
}

// problems returns the failed probes, sorted.
func (rs *resumer) problems() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := append([]string(nil), rs.probes...)
	sort.Strings(out)
	return out
}
