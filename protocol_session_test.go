package sqsadapter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/store"
)

// The driver of the randomized protocol test: one session starts runs of
// generated blueprints on workers under chaos, waits for them, and checks
// each against the sequential interpreter and the protocol's invariants. A
// protoClass says which blueprints and what else the session does: cancel
// runs, inject stray jobs once they finish, or purge the queue and
// reconcile.

// protoClass is one kind of randomized session.
type protoClass struct {
	name  string
	runs  int // generated blueprints, one run each
	chaos protoChaos
	shape protoShape
	// cancel is the share of runs cancelled at a random moment: after a
	// random number of their commits, from none to all.
	cancel float64
	// strays injects stray and forged jobs for each run once it finished
	// (protocol_strays_test.go).
	strays bool
	// rounds > 0 runs the blueprints in that many rounds; in each, the
	// queue is purged at a random moment, the workers are stopped, one
	// reconcile pass runs, and new workers finish the runs.
	rounds int
}

// protoShape selects how blueprints are generated, beyond genProtoCase.
type protoShape struct {
	// defaults: every node at the defaults, one attempt and no fallback
	// (protoAtDefaults).
	defaults bool
	// failHeavy: more failing nodes, with and without fallbacks, some
	// failing with a permanent error before a fallback (protoFailHeavy).
	failHeavy bool
	// hostile: ids and values from the hostile alphabet, plus crafted
	// cases whose ids collide with internal names (protocol_hostile_test.go).
	hostile bool
	// waits is the share of main nodes made wait, webhook or sleep nodes
	// (protoWaiting); zero means protoWaitShare, negative none.
	waits float64
	// sleepMax bounds sleep durations; zero means protoSleepMax.
	sleepMax time.Duration
	// subflows is the share of main nodes made subflow nodes, whose
	// children may hold subflow nodes in turn (protoSubflows).
	subflows float64
	// batches is the share of main nodes made batches (protoBatches).
	batches float64
}

// protoStats counts what a session did, for its summary line.
type protoStats struct {
	runs, completed, failed, cancelled, stalled int
	deliveries, duplicates, crashes, faults     int
	strays, purges, violations                  int
	resumed, webhooks, waitVisits               int
}

func (s *protoStats) add(o protoStats) {
	s.runs += o.runs
	s.completed += o.completed
	s.failed += o.failed
	s.cancelled += o.cancelled
	s.stalled += o.stalled
	s.deliveries += o.deliveries
	s.duplicates += o.duplicates
	s.crashes += o.crashes
	s.faults += o.faults
	s.strays += o.strays
	s.purges += o.purges
	s.violations += o.violations
	s.resumed += o.resumed
	s.webhooks += o.webhooks
	s.waitVisits += o.waitVisits
}

// protoRun is one run's expectation and result.
type protoRun struct {
	c     *protoCase
	exp   *interp.Result
	runID string
	// after is a run that must finish before this one starts.
	after *protoRun
	done  chan struct{} // closed when the driver is done with the run
	// cancelAt >= 0 cancels the run once it has that many commits.
	cancelAt int
	// cancelled: CancelRun succeeded.
	cancelled bool
	st        *sqsadapter.RunStatus
	stalled   bool
	// waits is what the resumer did for the run's waiting nodes
	// (protocol_wait_test.go); raceCancel, when not nil, is closed by the
	// resumer to cancel the run while it resumes a node.
	waits      *protoWaits
	raceCancel chan struct{}
	// deleted: the driver deleted the run once it was checked
	// (deleteSome); effects are its acquisitions and commits then.
	deleted bool
	effects [2]int
}

// protoSession is one running session.
type protoSession struct {
	t      *testing.T
	seed   uint64
	cls    protoClass
	e      *protoEnv
	runs   []*protoRun
	strays *protoStrays

	mu     sync.Mutex
	dumped int
	stats  protoStats
}

const (
	// protoRunTimeout bounds the wait for one run.
	protoRunTimeout = 240 * time.Second
	// protoIdle is how long a run may go without any node record or its
	// status changing state before the driver calls it stalled. Normal
	// waits (a lease or a visibility timeout, a retry delay) are far
	// shorter; but on a starved machine a backlog of jobs ahead of a run's
	// (the in-memory SQS hands out the oldest first) took over 20 s.
	protoIdle = 90 * time.Second
)

// runProtocolRandomOn runs the first n blueprints of seed on the
// environment that newEnv builds, and compares every run with the
// interpreter's.
func runProtocolRandomOn(t *testing.T, seed uint64, n int, chaos protoChaos, newEnv protoEnvFunc) {
	runProtoSession(t, seed, protoClass{name: "random", runs: n, chaos: chaos}, newEnv)
}

func runProtocolRandom(t *testing.T, seed uint64, n int, chaos protoChaos) {
	runProtocolRandomOn(t, seed, n, chaos, newProtoEnv)
}

// runProtoSession runs one session of class cls and returns its counts.
func runProtoSession(t *testing.T, seed uint64, cls protoClass, newEnv protoEnvFunc) protoStats {
	start := time.Now()
	s := &protoSession{t: t, seed: seed, cls: cls}
	only := protoOnly(t)
	var cases []*protoCase
	for i := range cls.runs {
		if only != nil && !only[i] {
			continue
		}
		c, err := genProtoCaseShaped(seed, i, cls.shape)
		require.NoError(t, err, "seed %d", seed)
		cases = append(cases, c)
	}
	var crafted []*protoCase
	if cls.shape.hostile {
		crafted = append(crafted, protoCraftedCollisions(t, seed, cls.runs)...)
	}
	if cls.rounds > 0 {
		crafted = append(crafted, protoCraftedLeafSkip(t, cls.runs+len(crafted)))
	}
	for _, c := range crafted {
		if only == nil || only[c.index] {
			cases = append(cases, c)
		}
	}
	byIndex := map[int]*protoRun{}
	var bps []*sqsadapter.Blueprint
	cancels := rand.New(rand.NewPCG(seed, 0xca9ce1))
	for _, c := range cases {
		exp, err := interp.Run(c.bp, c.initial, protoModel, interp.WithBlueprints(c.children...))
		require.NoError(t, err, "seed %d blueprint #%d: interpreter: %s", seed, c.index, c.json)
		// No two concurrent nodes write the same key: every run's outcome
		// is exact. (Expressions may fail to evaluate — a transform into a
		// node with "inputs" transforms what "inputs" names — which the
		// interpreter models: not taken, or nil.)
		require.Empty(t, exp.Racy, "seed %d blueprint #%d: interpreter: %s", seed, c.index, c.json)
		r := &protoRun{c: c, exp: exp, runID: c.runID, done: make(chan struct{}), cancelAt: -1, waits: newProtoWaits()}
		if cls.cancel > 0 && cancels.Float64() < cls.cancel {
			r.cancelAt = cancels.IntN(len(exp.Nodes(interp.Ran)) + 1)
			if len(exp.Resumes) > 0 && cancels.IntN(2) == 0 {
				r.raceCancel = make(chan struct{})
			}
		}
		byIndex[c.index] = r
		s.runs = append(s.runs, r)
		bps = append(bps, c.bp)
		bps = append(bps, c.children...)
	}
	for _, r := range s.runs {
		if r.c.after >= 0 {
			r.after = byIndex[r.c.after]
		}
	}
	s.e = newEnv(t, seed, cls.chaos, bps)
	for _, r := range s.runs {
		s.e.obs.expect(r.runID, r.c.bp)
	}
	if cls.strays {
		s.strays = newProtoStrays(s, bps)
	}

	rounds := max(min(cls.rounds, len(s.runs)), 1)
	for k := range rounds {
		var round []*protoRun
		for i, r := range s.runs {
			if i*rounds/max(len(s.runs), 1) == k {
				round = append(round, r)
			}
		}
		began := time.Now()
		s.runRound(k, round)
		if rounds > 1 {
			t.Logf("round %d: %d runs in %v", k, len(round), time.Since(began).Round(time.Millisecond))
		}
	}
	s.finish()
	s.summary(time.Since(start))
	return s.stats
}

// report fails the test for run r and, for the first few, dumps what is
// needed to reproduce and diagnose it.
func (s *protoSession) report(r *protoRun, format string, args ...any) {
	msg := fmt.Sprintf("seed %d %s blueprint #%d (%s, run %s): %s", s.seed, s.cls.name, r.c.index, protoShortID(r.c.bp.ID), protoShortID(r.runID), fmt.Sprintf(format, args...))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.violations++
	if s.dumped < 3 {
		s.dumped++
		msg += "\n" + s.e.diagnose(r)
	}
	s.t.Error(msg)
}

// fail fails the test for something that concerns no single run.
func (s *protoSession) fail(format string, args ...any) {
	s.mu.Lock()
	s.stats.violations++
	s.mu.Unlock()
	s.t.Errorf("seed %d %s: %s", s.seed, s.cls.name, fmt.Sprintf(format, args...))
}

// runRound starts the runs of one round, waits for them and checks them;
// with purge rounds, it also purges the queue and reconciles once.
func (s *protoSession) runRound(k int, runs []*protoRun) {
	var started, wg sync.WaitGroup
	sem := make(chan struct{}, 25)
	started.Add(len(runs))
	for _, r := range runs {
		wg.Go(func() {
			defer close(r.done)
			if r.after != nil {
				<-r.after.done
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			s.drive(r, started.Done)
		})
	}
	if s.cls.rounds > 0 {
		allDone := make(chan struct{})
		purged := make(chan struct{})
		go func() {
			defer close(purged)
			started.Wait()
			s.purgeAndReconcile(k, runs, allDone)
		}()
		wg.Wait()
		close(allDone)
		<-purged
		return
	}
	wg.Wait()
}

// drive starts run r, cancels it if planned, waits for it and checks it.
// It calls started once the run has been started (or could not be).
func (s *protoSession) drive(r *protoRun, started func()) {
	e := s.e
	ctx, cancel := context.WithTimeout(context.Background(), protoRunTimeout)
	defer cancel()
	for node, step := range r.c.crashAt {
		e.crasher.force(sqsadapter.Job{RunID: r.runID, NodeID: node}, step)
	}
	var err error
	for try := 0; try < 3 && ctx.Err() == nil; try++ { // the client path has no faults; retry anyway
		if _, err = e.client.StartRun(ctx, r.c.bp.ID, r.c.initial, sqsadapter.WithRunID(r.runID)); err == nil {
			break
		}
	}
	started()
	if err != nil {
		s.report(r, "StartRun: %v", err)
		return
	}

	// A planned cancellation runs beside the wait, as soon as the run has
	// cancelAt commits, or (raceCancel) as the resumer resumes a node.
	stop := make(chan struct{})
	cancelled := make(chan error, 1)
	if r.cancelAt >= 0 {
		trigger := e.obs.afterCommits(r.runID, r.cancelAt)
		go func() {
			select {
			case <-trigger:
				cancelled <- e.client.CancelRun(ctx, r.runID, "cancelled by the randomized test")
			case <-r.raceCancel:
				cancelled <- e.client.CancelRun(ctx, r.runID, "cancelled by the randomized test, racing a resume")
			case <-stop:
				cancelled <- errProtoNotTried
			}
		}()
	}
	resumerDone := make(chan struct{})
	go func() {
		defer close(resumerDone)
		s.resumer(ctx, r, stop)
	}()
	st, err := s.await(r)
	close(stop)
	<-resumerDone
	if r.cancelAt >= 0 {
		cerr := <-cancelled
		if errors.Is(cerr, errProtoNotTried) && err == nil {
			// The run finished first: cancelling it now must change nothing.
			cerr = e.client.CancelRun(ctx, r.runID, "cancelled by the randomized test, late")
			if !errors.Is(cerr, sqsadapter.ErrRunFinished) {
				s.report(r, "CancelRun of a run that finished as %s returned %v, not ErrRunFinished", st.Status, cerr)
			}
		}
		switch {
		case cerr == nil:
			r.cancelled = true
			if err == nil {
				st, err = e.client.GetRun(ctx, r.runID)
			}
		case errors.Is(cerr, sqsadapter.ErrRunFinished), errors.Is(cerr, errProtoNotTried):
		default:
			s.report(r, "CancelRun: %v", cerr)
		}
	}
	if err != nil {
		r.stalled = true
		s.report(r, "run stalled: %v", err)
		return
	}
	r.st = st
	s.checkRun(r)
	s.checkWaits(ctx, r)
	s.checkChildren(ctx, r)
	if s.strays != nil {
		s.strays.inject(r)
	}
	s.deleteSome(ctx, r)
}

// deleteSome deletes one checked run in four, as a client that waits for a
// run, reads it and deletes it: the run's last handlings may still be
// under way (the expiry, the message's delete), and duplicates and crashed
// handlings of its jobs come back later. checkDeleted then checks that
// none of them ran a node or left anything but tombstones.
func (s *protoSession) deleteSome(ctx context.Context, r *protoRun) {
	if r.c.index%4 != 1 || s.strays != nil {
		return // the strays' own checks read their runs' records
	}
	if err := s.e.client.DeleteRun(ctx, r.runID); err != nil {
		s.report(r, "DeleteRun of a %s run: %v", r.st.Status, err)
		return
	}
	r.deleted = true
	r.effects[0], r.effects[1] = s.e.obs.effects(r.runID)
}

// checkDeleted checks a deleted run once the queue has drained: absent to
// GetRun, no value left, every node record a closed and empty tombstone,
// and no node record acquired or committed since the deletion. (A node
// function may still be entered after it, by a handling that acquired its
// record before the run finished: the observer allows that, and only
// that.)
func (s *protoSession) checkDeleted(r *protoRun) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.e.client.GetRun(ctx, r.runID); !errors.Is(err, sqsadapter.ErrRunNotFound) {
		s.report(r, "deleted run: GetRun returned %v, not ErrRunNotFound", err)
	}
	if snap, err := s.e.contexts.Snapshot(ctx, r.runID); err != nil || len(snap) > 0 {
		s.report(r, "deleted run: values left: %v (%v)", slices.Sorted(maps.Keys(snap)), err)
	}
	recs, err := s.e.contexts.ListNodes(ctx, r.runID)
	if err != nil {
		s.report(r, "deleted run: list node records: %v", err)
	}
	for _, id := range slices.Sorted(maps.Keys(recs)) {
		if rec := recs[id]; rec.State != store.NodeClosed || rec.Output != nil {
			s.report(r, "deleted run: node record %q is %s, not a closed tombstone", id, rec.State)
		}
	}
	if a, c := s.e.obs.effects(r.runID); a != r.effects[0] || c != r.effects[1] {
		s.report(r, "deleted run: %d acquisition(s) and %d commit(s) took effect after the deletion", a-r.effects[0], c-r.effects[1])
	}
}

var errProtoNotTried = errors.New("not tried")

// await waits for run r to finish. It gives up when no node record of the
// run and not its status changed state for protoIdle (a run going in
// circles, or waiting for a message that is gone), or after
// protoRunTimeout.
func (s *protoSession) await(r *protoRun) (*sqsadapter.RunStatus, error) {
	ctx := context.Background()
	start := time.Now()
	lastChange, last, nextLook := start, "", start
	pause := 2 * time.Millisecond
	for {
		st, err := s.e.client.GetRun(ctx, r.runID)
		if err == nil && st.Finished() {
			return st, nil
		}
		now := time.Now()
		if !now.Before(nextLook) {
			if fp := s.e.progress(ctx, r.runID); fp != last {
				last, lastChange = fp, now
			}
			nextLook = now.Add(250 * time.Millisecond)
		}
		switch {
		case now.Sub(lastChange) > protoIdle:
			return nil, fmt.Errorf("no node record and not the status changed state for %v (last read: %v)", protoIdle, errOr(err, st))
		case now.Sub(start) > protoRunTimeout:
			return nil, fmt.Errorf("not finished after %v (last read: %v)", protoRunTimeout, errOr(err, st))
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

func errOr(err error, st *sqsadapter.RunStatus) any {
	if err != nil {
		return err
	}
	return st.Status
}

// progress returns a fingerprint of the state of a run: its status and the
// state of each node record (attempts and leases left out: a job that goes
// in circles changes them without making progress).
func (e *protoEnv) progress(ctx context.Context, runID string) string {
	var b strings.Builder
	if rec, err := e.contexts.GetRun(ctx, runID); err == nil {
		b.WriteString(string(rec.Status))
	}
	if recs, err := e.contexts.ListNodes(ctx, runID); err == nil {
		for _, id := range slices.Sorted(maps.Keys(recs)) {
			fmt.Fprintf(&b, "|%s=%s", id, recs[id].State)
		}
	}
	return b.String()
}

// checkRun compares a finished run with the interpreter's prediction.
func (s *protoSession) checkRun(r *protoRun) {
	if r.cancelled {
		if r.st.Status != sqsadapter.StatusCancelled {
			s.report(r, "CancelRun succeeded but the run ended %s (%s)", r.st.Status, r.st.Error)
			return
		}
		for _, p := range r.exp.CheckPrefix(r.st.Context) {
			s.report(r, "cancelled run: %s", p)
		}
		return
	}
	for i, p := range r.exp.Check(r.st) {
		if i == 0 && r.st.Status != r.exp.Status {
			if faults := s.e.faults.of(r.runID); len(faults) > 0 {
				p += fmt.Sprintf(" [faults injected into the run's calls: %s]", strings.Join(faults[:min(len(faults), 12)], ", "))
			}
		}
		s.report(r, "%s", p)
	}
}

// purgeAndReconcile waits for a random moment of round k — a random number
// of commits into it, or a crash after a commit in a run whose leaves are
// all skipped, whichever comes first; in a round with a crafted crash, that
// crash — and then purges the queue, stops the workers, waits until every
// lease has expired and no record changed for the threshold, runs one
// reconcile pass, and starts new workers. It does nothing if every run of
// the round finishes first.
func (s *protoSession) purgeAndReconcile(k int, runs []*protoRun, allDone <-chan struct{}) {
	e := s.e
	if e.mem == nil || e.stopWorkers == nil {
		s.fail("purge rounds need the in-memory queue")
		return
	}
	r := rand.New(rand.NewPCG(s.seed, 0x9e9e+uint64(k)))
	total := 0
	inRound := map[string]bool{}
	leafSkips := map[string]bool{} // runs whose leaves the interpreter skips, every one
	for _, run := range runs {
		total += len(run.exp.Nodes(interp.Ran))
		inRound[run.runID] = true
		leafSkips[run.runID] = protoAllLeavesSkipped(run)
	}
	target := int64(1 + r.IntN(max(total, 1)))
	var crafted map[string]bool
	for _, run := range runs {
		if len(run.c.crashAt) > 0 {
			if crafted == nil {
				crafted = map[string]bool{}
			}
			crafted[run.runID] = true
		}
	}
	if crafted != nil {
		target, leafSkips = -1, crafted
	}
	trigger := make(chan string, 1)
	fire := func(why string) {
		select {
		case trigger <- why:
		default:
		}
	}
	var commits atomic.Int64
	e.obs.setOnCommit(func(runID string) {
		if inRound[runID] && commits.Add(1) == target {
			fire(fmt.Sprintf("after %d commits", target))
		}
	})
	e.crasher.mu.Lock()
	e.crasher.onCrash = func(step string, job sqsadapter.Job) {
		if leafSkips[job.RunID] && (step == "advanced" || step == "complete") {
			fire(fmt.Sprintf("on a crash at %q of %s", step, job))
		}
	}
	e.crasher.mu.Unlock()
	defer func() {
		e.obs.setOnCommit(nil)
		e.crasher.mu.Lock()
		e.crasher.onCrash = nil
		e.crasher.mu.Unlock()
	}()

	var why string
	began := time.Now()
	select {
	case why = <-trigger:
	case <-allDone:
		return
	}
	purgedAt := time.Now()
	e.mem.sqs.Purge(e.mem.queue)
	e.crasher.unforce()
	s.mu.Lock()
	s.stats.purges++
	s.mu.Unlock()
	e.stopWorkers()
	stoppedAt := time.Now()
	// No worker runs now: leases and records stay as they are. Wait out
	// the longest lease and the threshold, so that one pass sees every
	// stalled run as stalled.
	// A sleep whose timer message was purged is found once its wake-up
	// time is a visibility timeout past: wait out the longest sleep too.
	threshold := 2 * unit
	time.Sleep(e.visibility + threshold + 2*unit + s.cls.shape.sleepBound())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := e.client.Reconcile(ctx, threshold)
	if err != nil || st.Errors > 0 {
		s.fail("round %d: reconcile pass: %+v, %v", k, st, err)
	}
	s.t.Logf("round %d: queue purged %s (%v into the round); workers stopped in %v; one reconcile pass: %+v",
		k, why, purgedAt.Sub(began).Round(time.Millisecond), stoppedAt.Sub(purgedAt).Round(time.Millisecond), st)
	e.startWorkers()
}

// protoAllLeavesSkipped reports whether the interpreter skips every leaf
// of the run's blueprint.
func protoAllLeavesSkipped(r *protoRun) bool {
	sources := map[string]bool{}
	for _, e := range r.c.bp.Edges {
		sources[e.Source] = true
	}
	leaves := 0
	for id, st := range r.exp.States {
		if !sources[id] {
			leaves++
			if st != interp.Skipped {
				return false
			}
		}
	}
	return leaves > 0
}

// finish checks what concerns the whole session once every run is done:
// the queue drains, nothing is dead-lettered, every node that ran was
// committed exactly once, the life-cycle rules held, and the stray jobs had
// their defined outcomes.
func (s *protoSession) finish() {
	e := s.e
	stalled := 0
	for _, r := range s.runs {
		if r.stalled {
			stalled++
		}
	}
	if stalled > 0 {
		s.fail("%d run(s) stalled", stalled)
	}
	deadline := time.Now().Add(30 * time.Second)
	for stalled == 0 {
		if e.queues.left(false) == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.fail("the queue did not drain: %s", e.queues.describe(false))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.queues.left(true); n > 0 {
		s.fail("%d message(s) dead-lettered: %s", n, e.queues.describe(true))
	}
	if s.strays != nil {
		s.strays.finish()
	}
	if e.spans != nil {
		s.checkTraces(e.spans)
	}
	for _, r := range s.runs {
		switch {
		case r.deleted:
			s.checkDeleted(r)
		case r.st != nil:
			s.checkRetention(r)
		}
	}

	// Every node output was committed exactly once (effective commits whose
	// caller saw an injected error included); skipped and unreachable nodes
	// never.
	for _, r := range s.runs {
		for _, p := range e.obs.check(r.runID, r.st != nil) {
			s.report(r, "%s", p)
		}
		if r.st == nil {
			continue
		}
		got := e.counted.commitsOf(r.runID)
		for _, id := range slices.Sorted(maps.Keys(got)) {
			if k := got[id]; k > 1 {
				s.report(r, "node %s committed %d times", id, k)
			}
			if !r.exp.Is(id, interp.Ran) {
				s.report(r, "node %s committed, but the interpreter has it %q", id, r.exp.States[id])
			}
		}
		if r.st.Status != sqsadapter.StatusCompleted {
			continue
		}
		unknown := e.counted.unknownOf(r.runID)
		for _, id := range r.exp.Nodes(interp.Ran) {
			if e.lostResponses && got[id] == 0 && unknown[id] > 0 {
				continue // committed by a call whose response was lost
			}
			if got[id] != 1 {
				s.report(r, "node %s ran, but its output was committed %d times", id, got[id])
			}
		}
	}
}

// checkRetention checks, once the queue has drained, that with a retention
// every item of a finished run and of each of its child runs, and its run
// record, expires at the run's finish time plus the retention: every path
// that finished a run, or replayed its finish after a crash, set it last,
// and nothing wrote an item of the run after it.
func (s *protoSession) checkRetention(r *protoRun) {
	expiries, ok := s.e.contexts.(interface {
		Expiries(runID string) (time.Time, map[string]time.Time)
	})
	if s.e.retention <= 0 || !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := []string{r.runID}
	for i := 0; i < len(ids) && i < 1000; i++ {
		st, err := s.e.client.GetRun(ctx, ids[i])
		if i > 0 && errors.Is(err, sqsadapter.ErrRunNotFound) {
			continue // a child its node named but never created (its run finished first)
		}
		if err != nil {
			s.report(r, "retention: read run %s: %v", ids[i], err)
			continue
		}
		ids = append(ids, st.Children...)
		if !st.Finished() {
			continue // a child run left running is reported elsewhere
		}
		want := wantExpiry(st.FinishedAt, s.e.retention)
		run, items := expiries.Expiries(ids[i])
		if run.IsZero() && s.cls.rounds > 0 {
			// A purge can take the message of the handling that finished
			// the run before it set the expiry: no one replays it, and the
			// reconciler lists only running runs (docs/protocol.md,
			// "Retention"). Only a run with no expiry at all is let pass.
			continue
		}
		if !run.Equal(want) {
			s.report(r, "retention: the record of %s run %s expires at %v, want %v", st.Status, ids[i], run, want)
		}
		for _, key := range slices.Sorted(maps.Keys(items)) {
			if !items[key].Equal(want) {
				s.report(r, "retention: item %q of %s run %s expires at %v, want %v", key, st.Status, ids[i], items[key], want)
			}
		}
	}
}

// summary logs one line about the session and fills in its counts.
func (s *protoSession) summary(elapsed time.Duration) {
	e := s.e
	st := &s.stats
	st.runs = len(s.runs)
	ran, skipped, commits := 0, 0, 0
	for _, r := range s.runs {
		switch {
		case r.stalled:
			st.stalled++
		case r.st == nil:
		case r.st.Status == sqsadapter.StatusCompleted:
			st.completed++
		case r.st.Status == sqsadapter.StatusFailed:
			st.failed++
		case r.st.Status == sqsadapter.StatusCancelled:
			st.cancelled++
		}
		ran += len(r.exp.Nodes(interp.Ran))
		skipped += len(r.exp.Nodes(interp.Skipped))
		for _, k := range e.counted.commitsOf(r.runID) {
			commits += k
		}
		st.resumed += int(r.waits.resumed.Load())
		st.webhooks += int(r.waits.delivered.Load())
		st.waitVisits += int(r.waits.visits.Load())
	}
	received, duplicated := e.queues.deliveries()
	deliveries, crashes, byStep := e.crasher.stats()
	st.deliveries, st.duplicates, st.crashes = received, duplicated, crashes
	st.faults = int(e.faults.before.Load() + e.faults.after.Load())
	crashShare := 0.0
	if deliveries > 0 {
		crashShare = 100 * float64(crashes) / float64(deliveries)
	}
	faultShare := 0.0
	if calls := e.faults.calls.Load(); calls > 0 {
		faultShare = 100 * float64(st.faults) / float64(calls)
	}
	steps := slices.Sorted(maps.Keys(byStep))
	sort.SliceStable(steps, func(i, j int) bool { return byStep[steps[i]] > byStep[steps[j]] })
	var stepList []string
	for _, k := range steps {
		stepList = append(stepList, fmt.Sprintf("%s:%d", k, byStep[k]))
	}
	s.t.Logf("protocol %s: seed=%d runs=%d completed=%d failed=%d cancelled=%d stalled=%d | nodes ran=%d skipped=%d commits=%d invocations=%d | "+
		"deliveries=%d (handled %d) duplicates=%d crashes=%d (%.1f%% of deliveries; by step %s) | faults=%d before + %d after of %d calls (%.1f%%) | "+
		"strays=%d purges=%d | waits: %d resumed, %d delivered, %d visits | violations=%d | %v",
		s.cls.name, s.seed, st.runs, st.completed, st.failed, st.cancelled, st.stalled, ran, skipped, commits, e.calls.total(),
		received, deliveries, duplicated, crashes, crashShare, strings.Join(stepList, " "),
		e.faults.before.Load(), e.faults.after.Load(), e.faults.calls.Load(), faultShare,
		st.strays, st.purges, st.resumed, st.webhooks, st.waitVisits, st.violations, elapsed.Round(time.Millisecond))
}

// protoSameStatus describes how a run's status or context changed between
// two reads, or returns "".
func protoSameStatus(before, after *sqsadapter.RunStatus) string {
	var diffs []string
	if before.Status != after.Status || before.Error != after.Error || before.FailedNode != after.FailedNode {
		diffs = append(diffs, fmt.Sprintf("status %s (%q, node %q) became %s (%q, node %q)",
			before.Status, before.Error, before.FailedNode, after.Status, after.Error, after.FailedNode))
	}
	if !reflect.DeepEqual(before.Context, after.Context) {
		diffs = append(diffs, "context changed:\n"+interp.Diff(before.Context, after.Context))
	}
	return strings.Join(diffs, "; ")
}

// protoShortID quotes an id for a message, cutting a long one short.
func protoShortID(id string) string {
	if len(id) <= 40 {
		return strconv.Quote(id)
	}
	cut := 32
	for cut > 0 && !utf8.RuneStart(id[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", strconv.Quote(id[:cut]), len(id))
}

// checkTraces checks the trace context that job messages carried: each
// handling's span hangs under a span that was recorded — the one that sent
// or chained its job, on a worker with telemetry, or the client call that
// started it — and of the same run, or of its parent or child run (a
// subflow's child is started, and its parent resumed, from the other's
// handling). A job that reached a worker without telemetry lost its trace
// context: its successors start traces of their own, which is allowed.
func (s *protoSession) checkTraces(rec *tracetest.SpanRecorder) {
	started := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, sp := range rec.Started() {
		started[sp.SpanContext().SpanID()] = sp
	}
	runOf := func(sp sdktrace.ReadOnlySpan) string {
		for _, kv := range sp.Attributes() {
			if kv.Key == "sqsadapter.run.id" {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	jobs, parented := 0, 0
	for _, sp := range rec.Ended() {
		if !strings.HasPrefix(sp.Name(), "job ") {
			continue
		}
		jobs++
		p := sp.Parent()
		if !p.IsValid() {
			continue
		}
		parented++
		parent, ok := started[p.SpanID()]
		if !ok {
			s.fail("span %q of run %s has a parent no process recorded", sp.Name(), runOf(sp))
			continue
		}
		if parent.SpanContext().TraceID() != sp.SpanContext().TraceID() {
			s.fail("span %q of run %s is in another trace than its parent", sp.Name(), runOf(sp))
		}
		run, prun := runOf(sp), runOf(parent)
		if prun != "" && prun != run && !strings.HasPrefix(run, "subflow:") && !strings.HasPrefix(prun, "subflow:") {
			s.fail("span %q of run %s hangs under span %q of run %s", sp.Name(), run, parent.Name(), prun)
		}
	}
	s.t.Logf("traces: %d job spans, %d under a recorded parent", jobs, parented)
	if jobs > 0 && parented == 0 {
		s.fail("no job span has a parent: the trace context is not carried")
	}
}
