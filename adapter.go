package sqsadapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// SqsAdapter runs workflow jobs from an SQS queue: it receives a job,
// executes its node through the registry, commits the outcome, schedules
// the successors and deletes the message. It also starts runs and reports
// their status.
//
// An SqsAdapter is safe for concurrent use. Create it with NewSqsAdapter;
// run its poller with Run and stop it with Shutdown, or drive it one job at
// a time with HandleJob.
type SqsAdapter struct {
	cfg      config
	log      *slog.Logger
	plans    map[planKey]*plan
	latest   map[string]*plan
	sender   *batcher[Job]
	deleter  *batcher[string]
	stopping chan struct{} // closed by Shutdown
	stopOnce sync.Once
	hard     context.CancelCauseFunc // cancels running jobs
	jobsCtx  context.Context

	// expressionErrors counts conditions and transforms that failed to
	// evaluate (ExpressionErrors).
	expressionErrors atomic.Int64

	// batchCounts caches the item counts of committed batches (batchmap.go).
	batchCounts batchCounts
	// runTimes is what WaitForRun knows of how long runs take (runwait.go).
	runTimes runTimes

	mu      sync.Mutex
	running bool
	ran     bool
	stopped chan struct{} // closed when Run returns
}

type planKey struct{ id, version string }

// NewSqsAdapter validates the options and the blueprints (every node's
// "uses" must be registered) and returns an adapter. It never panics; every
// problem is returned as an error matching ErrInvalidOption or
// ErrInvalidBlueprint. It starts no goroutine.
func NewSqsAdapter(opts ...Option) (*SqsAdapter, error) {
	cfg := defaultConfig()
	var errs []error
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			errs = append(errs, err)
		}
	}
	for _, req := range []struct {
		missing bool
		what    string
	}{
		{cfg.sqs == nil, "an SQS client (WithSQSClient)"},
		{cfg.queueURL == "", "a queue URL (WithQueueURL)"},
		{cfg.contexts == nil, "a context store (WithContextStore)"},
		{cfg.coord == nil, "a coordination store (WithCoordinationStore)"},
		{cfg.registry == nil, "a node registry (WithRegistry)"},
	} {
		if req.missing {
			errs = append(errs, fmt.Errorf("%w: %s is required", ErrInvalidOption, req.what))
		}
	}
	if cfg.visibilityTimeout < cfg.sqsTimeUnit {
		errs = append(errs, fmt.Errorf("%w: visibility timeout %v not in [1s, 12h]", ErrInvalidOption, cfg.visibilityTimeout))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.workerID == "" {
		cfg.workerID = "worker-" + randomID()[:12]
	}
	a := &SqsAdapter{
		cfg:      cfg,
		log:      cfg.logger,
		plans:    make(map[planKey]*plan),
		latest:   make(map[string]*plan),
		stopping: make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	for _, bp := range cfg.blueprints {
		p, err := compilePlan(bp, cfg.registry)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k := planKey{p.id, p.version}
		if _, dup := a.plans[k]; dup {
			errs = append(errs, fmt.Errorf("%w: blueprint %q version %q registered twice", ErrInvalidOption, p.id, p.version))
			continue
		}
		a.plans[k] = p
		a.latest[p.id] = p
	}
	if err := a.checkSubflows(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	a.jobsCtx, a.hard = context.WithCancelCause(context.Background())
	a.sender = newBatcher(10, 2, 0, a.sendBatch)
	// A finished job's heartbeat has stopped, at most a third of the
	// visibility timeout after it last extended the message: its delete
	// must not wait long enough for the message to come back. A sixth
	// leaves half the timeout for the delete itself.
	a.deleter = newBatcher(10, 2, min(cfg.deleteLinger, cfg.visibilityTimeout/6), a.deleteBatch)
	return a, nil
}

// planFor finds the plan of a job's blueprint version; a job without a
// version takes the version from its run record.
func (a *SqsAdapter) planFor(ctx context.Context, job Job) (*plan, error) {
	if p := a.plans[planKey{job.BlueprintID, job.BlueprintVersion}]; p != nil {
		return p, nil
	}
	version := job.BlueprintVersion
	if version == "" {
		rec, err := a.cfg.contexts.GetRun(ctx, job.RunID)
		if err != nil {
			return nil, fmt.Errorf("sqsadapter: look up blueprint version of run %q: %w", job.RunID, err)
		}
		if rec.BlueprintID != job.BlueprintID {
			return nil, fmt.Errorf("%w: job names blueprint %q but run %q uses %q", ErrUnknownBlueprint, job.BlueprintID, job.RunID, rec.BlueprintID)
		}
		version = rec.BlueprintVersion
		if p := a.plans[planKey{job.BlueprintID, version}]; p != nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w: %q version %q is not registered in this worker", ErrUnknownBlueprint, job.BlueprintID, version)
}

// HandleJob runs one job to the end without polling: for AWS Lambda SQS
// handlers and tests. It blocks until the job is handled and is safe for
// concurrent use. A nil error means the job is done and its message may be
// deleted; an error means it must be delivered again later (return it to
// Lambda as a batch item failure). HandleJob does not touch any SQS message.
func (a *SqsAdapter) HandleJob(ctx context.Context, job Job) error {
	if err := job.validate(); err != nil {
		return err
	}
	o := a.runJob(ctx, job, nil)
	switch o.kind {
	case outcomeDone:
		return nil
	case outcomeAbandon:
		return errCrashed
	}
	if o.err == nil {
		return fmt.Errorf("sqsadapter: job %s: retry after %v", job, o.delay)
	}
	return fmt.Errorf("sqsadapter: job %s: %w", job, o.err)
}

// randomID returns 32 random hex digits.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sleep waits d; false if the adapter began shutting down or ctx ended first.
func (a *SqsAdapter) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-a.stopping:
		return false
	}
}

// ExpressionErrors counts the edge conditions and transforms that failed to
// evaluate (a type error, an index out of range, ...) since the adapter was
// created. A failed condition counts as false and a failed transform as
// nil, as in Flowcraft; the first failure of each edge is also logged at
// WARN. It is safe for concurrent use.
func (a *SqsAdapter) ExpressionErrors() int64 { return a.expressionErrors.Load() }
