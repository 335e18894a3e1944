package sqsadapter_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/flowcraft/sqsadapter"
)

// protoObserver watches the life cycle of runs through the stores the
// workers and the client use, and checks what must hold once a run's final
// status is written (SPEC §4.7):
//
//   - the status is written exactly once;
//   - no acquisition of a node record of the run (a node's or a fallback's)
//     that starts after the status write succeeds;
//   - no commit of the run that starts after it takes effect (so a
//     cancelled run's context holds no output committed after the
//     cancellation);
//   - no node function of the run is entered by a handling that acquired
//     its record after it.
//
// "After" is real time: every observed call takes a tick of one clock
// before it starts and after it returns, and a call that starts after
// another returned has the larger tick. Calls that overlap are not
// ordered, and not reported.
//
// The methods are safe for concurrent use, and do nothing on a nil
// observer.
type protoObserver struct {
	clock atomic.Int64

	mu       sync.Mutex
	runs     map[string]*protoLife
	onCommit func(runID string) // called after each counted commit, without the lock
}

// protoLife is what the observer saw of one run.
type protoLife struct {
	// nodes are the node ids of the run's blueprint; fallbackOf maps a
	// fallback node to the nodes it stands in for.
	nodes      map[string]bool
	fallbackOf map[string][]string
	finishes   []protoEvent // status writes that took effect
	// unsure are status writes whose caller got an error but that may have
	// taken effect: on the emulators the SDK retries a call whose response
	// it lost, and the retry finds the run finished.
	unsure   []protoEvent
	acquires []protoEvent // acquisitions that took effect
	commits  []protoEvent // commits that took effect
	entries  []protoEvent // node function calls
	triggers []*protoTrigger
}

// protoEvent is one observed call: what (a status, a record or node id),
// the attempt, and its clock ticks.
type protoEvent struct {
	what       string
	attempt    int
	start, end int64
}

type protoTrigger struct {
	n  int
	ch chan struct{}
}

func newProtoObserver() *protoObserver {
	return &protoObserver{runs: map[string]*protoLife{}}
}

func (o *protoObserver) tick() int64 {
	if o == nil {
		return 0
	}
	return o.clock.Add(1)
}

// life returns the record of a run. Called with o.mu held.
func (o *protoObserver) life(runID string) *protoLife {
	l := o.runs[runID]
	if l == nil {
		l = &protoLife{}
		o.runs[runID] = l
	}
	return l
}

// effects counts the acquisitions and commits of a run that took effect
// (0, 0 on a nil observer).
func (o *protoObserver) effects(runID string) (acquires, commits int) {
	if o == nil {
		return 0, 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.life(runID)
	return len(l.acquires), len(l.commits)
}

// expect tells the observer the blueprint of a run, to relate fallback
// calls to the records they acquired.
func (o *protoObserver) expect(runID string, bp *sqsadapter.Blueprint) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.life(runID)
	l.nodes, l.fallbackOf = map[string]bool{}, map[string][]string{}
	for _, d := range bp.Nodes {
		l.nodes[d.ID] = true
		if f := d.Config.Fallback; f != "" {
			l.fallbackOf[f] = append(l.fallbackOf[f], d.ID)
		}
	}
}

func (o *protoObserver) record(runID string, add func(*protoLife)) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	add(o.life(runID))
}

// finished records a status write that took effect and started at start.
func (o *protoObserver) finished(runID, status string, start int64) {
	end := o.tick()
	o.record(runID, func(l *protoLife) { l.finishes = append(l.finishes, protoEvent{what: status, start: start, end: end}) })
}

// finishUnsure records a status write that failed but may have taken
// effect.
func (o *protoObserver) finishUnsure(runID, status string, start int64) {
	end := o.tick()
	o.record(runID, func(l *protoLife) { l.unsure = append(l.unsure, protoEvent{what: status, start: start, end: end}) })
}

// acquired records an acquisition of a node record that took effect.
func (o *protoObserver) acquired(runID, recordID string, attempts int, start int64) {
	end := o.tick()
	o.record(runID, func(l *protoLife) {
		l.acquires = append(l.acquires, protoEvent{what: recordID, attempt: attempts, start: start, end: end})
	})
}

// committed records a commit that took effect.
func (o *protoObserver) committed(runID, nodeID string, start int64) {
	if o == nil {
		return
	}
	end := o.tick()
	var fire []chan struct{}
	o.mu.Lock()
	l := o.life(runID)
	l.commits = append(l.commits, protoEvent{what: nodeID, start: start, end: end})
	l.triggers = slices.DeleteFunc(l.triggers, func(tr *protoTrigger) bool {
		if len(l.commits) >= tr.n {
			fire = append(fire, tr.ch)
			return true
		}
		return false
	})
	hook := o.onCommit
	o.mu.Unlock()
	for _, ch := range fire {
		close(ch)
	}
	if hook != nil {
		hook(runID)
	}
}

// entered records a call of a node function.
func (o *protoObserver) entered(runID, nodeID string, attempt int) {
	at := o.tick()
	o.record(runID, func(l *protoLife) {
		l.entries = append(l.entries, protoEvent{what: nodeID, attempt: attempt, start: at, end: at})
	})
}

// afterCommits returns a channel closed once the run has n commits.
func (o *protoObserver) afterCommits(runID string, n int) <-chan struct{} {
	ch := make(chan struct{})
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.life(runID)
	if len(l.commits) >= n {
		close(ch)
		return ch
	}
	l.triggers = append(l.triggers, &protoTrigger{n: n, ch: ch})
	return ch
}

// setOnCommit sets the function called after every counted commit.
func (o *protoObserver) setOnCommit(f func(runID string)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.onCommit = f
}

// check returns what broke the life-cycle rules in the run; finished says
// that its final status was read.
func (o *protoObserver) check(runID string, finished bool) []string {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.life(runID)
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	finishes := l.finishes
	if len(finishes) == 0 && finished && len(l.unsure) > 0 {
		// Written by a call whose response was lost: the write took effect
		// before that call returned, which is the bound the rules use.
		finishes = l.unsure[:1]
	}
	if len(l.finishes) > 1 || (finished && len(finishes) == 0) {
		var statuses []string
		for _, f := range l.finishes {
			statuses = append(statuses, f.what)
		}
		report("the final status was written %d times, not once: %v", len(l.finishes), statuses)
	}
	if len(finishes) == 0 {
		return problems
	}
	fin := finishes[0]
	var acquired, committed, unacquired, lateAcquired []string
	for _, a := range l.acquires {
		if a.start > fin.end {
			acquired = append(acquired, fmt.Sprintf("%q#%d", a.what, a.attempt))
		}
	}
	for _, c := range l.commits {
		if c.start > fin.end {
			committed = append(committed, strconv.Quote(c.what))
		}
	}
	for _, e := range l.entries {
		if e.start < fin.end {
			continue
		}
		// The acquisition this call belongs to: the last one of its record
		// (the node's, or that of a node it is the fallback of; any
		// fallback's for a node its blueprint lacks) with its attempt
		// number, before it.
		records := []string{e.what}
		for _, n := range l.fallbackOf[e.what] {
			records = append(records, n+protoFallbackSuffix)
		}
		foreign := !l.nodes[e.what]
		var acq *protoEvent
		for i := range l.acquires {
			a := &l.acquires[i]
			mine := slices.Contains(records, a.what) || (foreign && strings.HasSuffix(a.what, protoFallbackSuffix))
			if a.attempt == e.attempt && a.end < e.start && mine && (acq == nil || a.start > acq.start) {
				acq = a
			}
		}
		switch {
		case acq == nil:
			unacquired = append(unacquired, fmt.Sprintf("%q#%d", e.what, e.attempt))
		case acq.start > fin.end:
			lateAcquired = append(lateAcquired, fmt.Sprintf("%q#%d (record %q)", e.what, e.attempt, acq.what))
		}
	}
	if len(acquired) > 0 {
		report("node records acquired by calls that started after the run was %s (record#attempt): %s", fin.what, strings.Join(acquired, ", "))
	}
	if len(committed) > 0 {
		report("node outputs committed by calls that started after the run was %s: %s", fin.what, strings.Join(committed, ", "))
	}
	if len(lateAcquired) > 0 {
		report("node functions entered by handlings that acquired their record after the run was %s (node#attempt): %s", fin.what, strings.Join(lateAcquired, ", "))
	}
	if len(unacquired) > 0 {
		report("node functions entered after the run was %s with no acquisition of their record (node#attempt): %s", fin.what, strings.Join(unacquired, ", "))
	}
	return problems
}

// describe summarizes what the observer saw of a run, for diagnostics.
func (o *protoObserver) describe(runID string) string {
	if o == nil {
		return ""
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.life(runID)
	var b strings.Builder
	fmt.Fprintf(&b, "status writes %v; acquisitions %d; commits %d; node calls %d", l.finishes, len(l.acquires), len(l.commits), len(l.entries))
	return b.String()
}

// protoFallbackSuffix ends the name of a node's fallback attempt record
// (handle.go, fallbackRecord): U+001F, which no id holds, and "fallback".
const protoFallbackSuffix = "\x1ffallback"
