package sqsadapter

import (
	"sync"
	"time"
)

// runTimes is what WaitForRun knows of how long runs take: per blueprint
// version, a running average of the runs it saw complete, and the runs this
// adapter started, with when. WaitForRun reads a run's status about when
// the run is expected to finish instead of from the moment it is called, so
// that a client waiting for each run pays one or two reads, not one per
// doubling of the run's duration.
type runTimes struct {
	mu      sync.Mutex
	typical map[planKey]time.Duration
	started map[string]startedRun
}

type startedRun struct {
	key planKey
	at  time.Time
}

const (
	// maxStartedRuns bounds the runs remembered between StartRun and
	// WaitForRun: past it they are forgotten (WaitForRun then reads at
	// once, as for a run started elsewhere).
	maxStartedRuns = 10000
	// maxExpectedWait bounds how long WaitForRun waits for a run's expected
	// finish before reading its status again.
	maxExpectedWait = 5 * time.Second
	// firstPollInterval and maxPollInterval bound the wait between two
	// reads of a run's status otherwise.
	firstPollInterval = 10 * time.Millisecond
	maxPollInterval   = time.Second
)

// start notes that run runID of plan key was started at at.
func (t *runTimes) start(runID string, key planKey, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started == nil || len(t.started) >= maxStartedRuns {
		t.started = make(map[string]startedRun)
	}
	t.started[runID] = startedRun{key, at}
}

// firstRead is how long WaitForRun waits before its first read of run
// runID: until the run is expected to finish, if this adapter started it
// and knows how long runs of its blueprint take; else nothing.
func (t *runTimes) firstRead(runID string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.started[runID]
	if !ok {
		return 0
	}
	return t.untilExpected(s.key, s.at, now)
}

// next is how long to wait before reading again the status of a run of
// plan key created at created, still running at now: until the run is
// expected to finish, if that is later than the poll interval. The poll
// interval starts at a tenth of the typical duration (at least
// firstPollInterval; interval is 0 after the first read) and doubles up to
// maxPollInterval; next returns the one to pass next time.
func (t *runTimes) next(key planKey, created, now time.Time, interval time.Duration) (wait, nextInterval time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if interval == 0 {
		interval = max(t.typical[key]/10, firstPollInterval)
	}
	interval = min(interval, maxPollInterval)
	if ahead := t.untilExpected(key, created, now); ahead > interval {
		return ahead, interval // the polls start from there
	}
	return interval, min(2*interval, maxPollInterval)
}

// untilExpected is how long from now until a run of key created at
// created is expected to finish: 0.9 of the typical duration, within
// maxExpectedWait; t.mu held.
func (t *runTimes) untilExpected(key planKey, created, now time.Time) time.Duration {
	typ := t.typical[key]
	if typ <= 0 {
		return 0
	}
	return min(max(created.Add(typ*9/10).Sub(now), 0), maxExpectedWait)
}

// finished learns from a run WaitForRun saw finish.
func (t *runTimes) finished(st *RunStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.started, st.RunID)
	d := st.FinishedAt.Sub(st.CreatedAt)
	if st.Status != StatusCompleted || d <= 0 || st.CreatedAt.IsZero() {
		return // a failure or a cancel says little about how long runs take
	}
	key := planKey{st.BlueprintID, st.BlueprintVersion}
	if t.typical == nil {
		t.typical = make(map[planKey]time.Duration)
	}
	if typ, ok := t.typical[key]; ok {
		t.typical[key] = typ + (d-typ)/4
	} else if len(t.typical) < maxStartedRuns {
		t.typical[key] = d
	}
}
