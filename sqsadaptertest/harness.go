package sqsadaptertest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowcraft/sqsadapter"
)

// Timings of a Harness. The adapter and the fake SQS both count SQS's
// seconds as real seconds, so the visibility timeout cannot go below 1s;
// it matters only when a job is abandoned (a fault, a shutdown), since a
// node's retries wait in the worker. Receives long-poll, and the fake SQS
// answers one as soon as a message arrives, so the wait costs no latency.
const (
	harnessVisibility      = 2 * time.Second
	harnessWaitTime        = time.Second
	harnessMaxReceiveCount = 10
	harnessShutdownTimeout = 10 * time.Second
)

// Config configures New. Registry and Blueprints are required.
type Config struct {
	Registry   sqsadapter.NodeRegistry
	Blueprints []*sqsadapter.Blueprint

	// Workers is how many adapters run jobs, each in its own goroutine
	// (default 2: enough to exercise jobs moving between workers); a
	// negative count starts none, for a test that drives jobs itself with
	// HandleJob.
	Workers int

	// Queue, if set, configures the job queue instead of the harness's
	// defaults (a 2 s visibility timeout, a message moved to the
	// dead-letter queue on its 10th receive); an unset DeadLetterQueueURL
	// is the harness's dead-letter queue. Pair a VisibilityTimeout here with
	// sqsadapter.WithVisibilityTimeout in Options.
	Queue QueueOptions

	// Options are given to every adapter after the harness's own, so they
	// override them (WithConcurrency, WithLogger, WithRetryBackoff, ...).
	Options []sqsadapter.Option

	// Timeout bounds Start, Run and Wait (default 30s).
	Timeout time.Duration

	// LogLevel is the lowest level of the adapters' logs that reach the
	// test log (default slog.LevelInfo).
	LogLevel slog.Leveler

	// Setup, if set, runs after the fakes exist and before the workers
	// start: the place to set their fault hooks (SQS.BeforeCall,
	// ContextStore.BeforeCall, ...), which must not change while workers run.
	Setup func(*Harness)
}

// Harness is a set of workers running jobs from one in-memory queue with
// in-memory stores, for a test: the test starts runs and waits for them,
// and New's cleanup stops the workers. Its methods report failures through
// the test's Fatalf, so call them from the test's goroutine.
type Harness struct {
	// Adapter starts runs and reports their status; it runs no jobs.
	Adapter *sqsadapter.SqsAdapter
	// Workers run the jobs, each in a goroutine of its own, until cleanup.
	Workers []*sqsadapter.SqsAdapter

	SQS *SQS
	// QueueURL is the job queue. Its redrive policy moves a message
	// received 10 times to the dead-letter queue at DLQURL.
	QueueURL, DLQURL  string
	ContextStore      *ContextStore
	CoordinationStore *CoordinationStore

	t       testing.TB
	timeout time.Duration
}

// New creates the fake SQS with a job queue and a dead-letter queue, the
// two in-memory stores, a client adapter and cfg.Workers workers, and
// starts the workers. Their logs go to t.Log. A cleanup registered on t
// shuts the workers down (at most 10s) and fails the test if one of them
// did not stop cleanly. New fails the test if an adapter cannot be created.
func New(t testing.TB, cfg Config) *Harness {
	t.Helper()
	tl := &testLog{t: t}
	t.Cleanup(tl.close) // registered first, so it runs after the workers stopped

	h := &Harness{
		SQS:               NewSQS(),
		ContextStore:      NewContextStore(),
		CoordinationStore: NewCoordinationStore(),
		t:                 t,
		timeout:           cmp.Or(cfg.Timeout, 30*time.Second),
	}
	h.DLQURL = h.SQS.CreateQueue("jobs-dlq", QueueOptions{})
	queue := cfg.Queue
	if queue == (QueueOptions{}) {
		queue = QueueOptions{VisibilityTimeout: harnessVisibility, MaxReceiveCount: harnessMaxReceiveCount}
	}
	if queue.DeadLetterQueueURL == "" && queue.MaxReceiveCount > 0 {
		queue.DeadLetterQueueURL = h.DLQURL
	}
	h.QueueURL = h.SQS.CreateQueue("jobs", queue)
	level := cfg.LogLevel
	if level == nil {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: level}))
	newAdapter := func(name string) *sqsadapter.SqsAdapter {
		opts := append([]sqsadapter.Option{
			sqsadapter.WithSQSClient(h.SQS),
			sqsadapter.WithQueueURL(h.QueueURL),
			sqsadapter.WithContextStore(h.ContextStore),
			sqsadapter.WithCoordinationStore(h.CoordinationStore),
			sqsadapter.WithRegistry(cfg.Registry),
			sqsadapter.WithBlueprints(cfg.Blueprints...),
			sqsadapter.WithWorkerID(name),
			sqsadapter.WithLogger(logger),
			sqsadapter.WithVisibilityTimeout(harnessVisibility),
			sqsadapter.WithWaitTime(harnessWaitTime),
			sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: 10 * time.Millisecond, PollBackoffMax: 200 * time.Millisecond}),
			sqsadapter.WithTuning(sqsadapter.Tuning{ReceiveWindow: 5 * time.Millisecond, DeleteLinger: 5 * time.Millisecond}),
		}, cfg.Options...)
		a, err := sqsadapter.NewSqsAdapter(opts...)
		if err != nil {
			t.Fatalf("sqsadaptertest: create adapter %s: %v", name, err)
		}
		return a
	}
	h.Adapter = newAdapter("client")
	for i := range max(cmp.Or(cfg.Workers, 2), 0) {
		h.Workers = append(h.Workers, newAdapter(workerName(i)))
	}
	if cfg.Setup != nil {
		cfg.Setup(h)
	}

	errs := make([]chan error, len(h.Workers))
	for i, w := range h.Workers {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- w.Run(context.Background()) }()
	}
	t.Cleanup(func() { h.stop(errs) })
	return h
}

// stop shuts the workers down together and reports any that did not stop
// cleanly. A worker whose goroutine had not called Run yet when Shutdown
// came reports ErrAdapterClosed: it never ran, which is clean.
func (h *Harness) stop(errs []chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), harnessShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	shutdown := make([]error, len(h.Workers))
	for i, w := range h.Workers {
		wg.Go(func() { shutdown[i] = w.Shutdown(ctx) })
	}
	wg.Wait()
	_ = h.Adapter.Shutdown(ctx) // never ran: this only marks it closed
	for i := range h.Workers {
		name := workerName(i)
		if err := shutdown[i]; err != nil {
			h.t.Errorf("sqsadaptertest: shut down %s: %v (its running jobs were cancelled)", name, err)
		}
		if err := <-errs[i]; err != nil && !errors.Is(err, sqsadapter.ErrAdapterClosed) {
			h.t.Errorf("sqsadaptertest: %s: Run: %v", name, err)
		}
	}
}

// workerName is the worker id of h.Workers[i], in its logs and leases.
func workerName(i int) string { return "worker-" + strconv.Itoa(i+1) }

// Start starts a run of the blueprint with the initial context and
// returns its id; it fails the test if the run cannot be started.
func (h *Harness) Start(blueprintID string, initial map[string]any, opts ...sqsadapter.RunOption) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), h.timeout)
	defer cancel()
	id, err := h.Adapter.StartRun(ctx, blueprintID, initial, opts...)
	if err != nil {
		h.t.Fatalf("sqsadaptertest: start a run of blueprint %q: %v", blueprintID, err)
	}
	return id
}

// Wait waits for the run to finish — completed, failed or cancelled — and
// returns its status. If it has not finished within the timeout (Config),
// Wait fails the test with the run's id, its status and the queues' state.
func (h *Harness) Wait(runID string) *sqsadapter.RunStatus {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), h.timeout)
	defer cancel()
	st, err := h.Adapter.WaitForRun(ctx, runID)
	if err == nil {
		return st
	}
	if st == nil || ctx.Err() == nil {
		h.t.Fatalf("sqsadaptertest: wait for run %s: %v", runID, err)
		return nil
	}
	visible, inFlight, delayed := h.SQS.Len(h.QueueURL)
	dead, _, _ := h.SQS.Len(h.DLQURL)
	h.t.Fatalf("sqsadaptertest: run %s of blueprint %q did not finish within %v: status %q; job queue: %d visible, %d in flight, %d delayed; dead-letter queue: %d",
		runID, st.BlueprintID, h.timeout, st.Status, visible, inFlight, delayed, dead)
	return nil
}

// Run starts a run of the blueprint, waits for it to finish and returns
// its status, as Start and Wait.
func (h *Harness) Run(blueprintID string, initial map[string]any, opts ...sqsadapter.RunOption) *sqsadapter.RunStatus {
	h.t.Helper()
	return h.Wait(h.Start(blueprintID, initial, opts...))
}

// RequireCompleted fails the test unless the run completed, naming the
// node that failed it and why.
func (h *Harness) RequireCompleted(st *sqsadapter.RunStatus) {
	h.t.Helper()
	if st == nil {
		h.t.Fatalf("sqsadaptertest: RequireCompleted: nil run status")
		return
	}
	if st.Status != statusCompleted {
		detail := ""
		if st.FailedNode != "" || st.Error != "" {
			detail = fmt.Sprintf(" (node %q: %s)", st.FailedNode, st.Error)
		}
		h.t.Fatalf("sqsadaptertest: run %s of blueprint %q is %s, want completed%s", st.RunID, st.BlueprintID, st.Status, detail)
	}
}

// statusCompleted is RunStatus.Status of a completed run.
const statusCompleted = sqsadapter.StatusCompleted

// RequireNodeStates fails the test unless each listed node of the run is in
// the given state ("completed", "skipped", "failed", "running",
// "retrying", "closed", or "" for a node never reached), as GetRun reports
// it; nodes not listed are not checked.
func (h *Harness) RequireNodeStates(st *sqsadapter.RunStatus, want map[string]string) {
	h.t.Helper()
	var wrong []string
	for _, id := range slices.Sorted(maps.Keys(want)) {
		if got := st.Nodes[id].State; got != want[id] {
			wrong = append(wrong, fmt.Sprintf("%s is %q, want %q", id, got, want[id]))
		}
	}
	if len(wrong) > 0 {
		h.t.Fatalf("sqsadaptertest: run %s: %s", st.RunID, strings.Join(wrong, "; "))
	}
}

// testLog writes each log record to t.Log, until close: logging through a
// test that has completed panics, and a goroutine may log late.
type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

// Write logs p, one record of slog's TextHandler, without its newline.
func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
