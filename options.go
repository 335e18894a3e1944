package sqsadapter

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flowcraft/sqsadapter/internal/obs"
)

// Option configures an SqsAdapter; see NewSqsAdapter.
type Option func(*config) error

type config struct {
	sqs         SQSClient
	queueURL    string
	contexts    ContextStore
	coord       CoordinationStore
	registry    NodeRegistry
	blueprints  []*Blueprint
	concurrency int
	logger      *slog.Logger
	workerID    string

	waitTime          time.Duration
	visibilityTimeout time.Duration
	pollBackoffMin    time.Duration
	pollBackoffMax    time.Duration
	drainTimeout      time.Duration
	// receiveBatchWindow is how long a busy poller waits for more free
	// slots before receiving, so that receives come in batches.
	receiveBatchWindow time.Duration
	// deleteLinger is how long a delete waits for others to fill its batch.
	deleteLinger time.Duration
	ackTimeout   time.Duration

	retryMultiplier float64
	retryMaxDelay   time.Duration
	retryJitter     float64

	coordinationTTL time.Duration
	retention       time.Duration // 0: finished runs are kept
	maxInlineInput  int
	checkRuns       bool

	// chainNodes and chainTime bound the jobs a message's chain runs
	// inline after its own (chain.go): how many, and until when.
	chainNodes int
	chainTime  time.Duration

	// nodeTimeout bounds the attempts of nodes without config.timeout (0: none).
	nodeTimeout time.Duration
	// middleware wraps every node attempt, first outermost.
	middleware []func(NodeFunc) NodeFunc

	// sqsTimeUnit is the duration of SQS's "seconds" (a test seam: the
	// in-memory SQS can count in shorter units).
	sqsTimeUnit time.Duration

	// clock and clockSpeed are a test seam for sleeps: the time a sleep's
	// wake-up is measured against, and how many of its seconds pass per
	// real second (a virtual clock runs faster; the queue's delays follow).
	clock      func() time.Time
	clockSpeed float64

	// crashHook is a test seam: returning true at a step makes the job stop
	// there as if the worker died (see export_test.go).
	crashHook func(step string, job Job) bool

	// hooks instrument the engine (telemetry.go); nil: none.
	hooks obs.Hooks
}

func defaultConfig() config {
	return config{
		concurrency:        10,
		waitTime:           20 * time.Second,
		visibilityTimeout:  30 * time.Second,
		pollBackoffMin:     100 * time.Millisecond,
		pollBackoffMax:     10 * time.Second,
		drainTimeout:       30 * time.Second,
		receiveBatchWindow: 50 * time.Millisecond,
		deleteLinger:       time.Second,
		ackTimeout:         10 * time.Second,
		retryMultiplier:    1,
		retryMaxDelay:      5 * time.Minute,
		coordinationTTL:    7 * 24 * time.Hour,
		maxInlineInput:     64 << 10,
		chainNodes:         16,
		chainTime:          time.Second,
		nodeTimeout:        defaultNodeTimeout,
		sqsTimeUnit:        time.Second,
		clock:              time.Now,
		clockSpeed:         1,
	}
}

// WithSQSClient sets the SQS client (an *sqs.Client, or sqsadaptertest.SQS). Required.
func WithSQSClient(c SQSClient) Option {
	return func(cfg *config) error {
		if c == nil {
			return fmt.Errorf("%w: nil SQS client", ErrInvalidOption)
		}
		cfg.sqs = c
		return nil
	}
}

// WithQueueURL sets the job queue's URL, as returned by CreateQueue or
// GetQueueUrl. Required.
func WithQueueURL(url string) Option {
	return func(cfg *config) error {
		if url == "" {
			return fmt.Errorf("%w: empty queue URL", ErrInvalidOption)
		}
		cfg.queueURL = url
		return nil
	}
}

// WithContextStore sets the store of run contexts, node records and run
// records (a *DynamoDbContext, or sqsadaptertest.NewContextStore()). Required.
func WithContextStore(s ContextStore) Option {
	return func(cfg *config) error {
		if s == nil {
			return fmt.Errorf("%w: nil context store", ErrInvalidOption)
		}
		cfg.contexts = s
		return nil
	}
}

// WithCoordinationStore sets the store of join records (a
// *DynamoDbCoordinationStore, or sqsadaptertest.NewCoordinationStore()). Required.
func WithCoordinationStore(s CoordinationStore) Option {
	return func(cfg *config) error {
		if s == nil {
			return fmt.Errorf("%w: nil coordination store", ErrInvalidOption)
		}
		cfg.coord = s
		return nil
	}
}

// WithRegistry sets the node implementations. Every node of every
// blueprint must be registered. Required.
func WithRegistry(r NodeRegistry) Option {
	return func(cfg *config) error {
		if r == nil {
			return fmt.Errorf("%w: nil registry", ErrInvalidOption)
		}
		cfg.registry = r
		return nil
	}
}

// WithBlueprints registers blueprints. Several versions of one blueprint id
// may be registered side by side (metadata.version); StartRun uses the one
// registered last unless WithBlueprintVersion says otherwise.
func WithBlueprints(bs ...*Blueprint) Option {
	return func(cfg *config) error {
		for i, b := range bs {
			if b == nil {
				return fmt.Errorf("%w: blueprint #%d is nil", ErrInvalidOption, i)
			}
		}
		cfg.blueprints = append(cfg.blueprints, bs...)
		return nil
	}
}

// WithConcurrency sets how many jobs a worker runs at once (default 10).
func WithConcurrency(n int) Option {
	return func(cfg *config) error {
		if n < 1 {
			return fmt.Errorf("%w: concurrency %d < 1", ErrInvalidOption, n)
		}
		cfg.concurrency = n
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(cfg *config) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		cfg.logger = l
		return nil
	}
}

// WithWorkerID names this worker in leases and logs (default: random).
func WithWorkerID(id string) Option {
	return func(cfg *config) error {
		if id == "" {
			return fmt.Errorf("%w: empty worker id", ErrInvalidOption)
		}
		cfg.workerID = id
		return nil
	}
}

// WithWaitTime sets the long-poll wait of ReceiveMessage (default 20s, at
// most 20s; SQS counts whole seconds, so a fraction is rounded up). An idle
// worker makes one ReceiveMessage per wait time. 0 leaves the wait to the
// queue's ReceiveMessageWaitTimeSeconds attribute; then, as that may be 0
// (short polling), a worker pauses for Tuning.PollBackoffMin after each
// empty receive rather than asking again at once.
func WithWaitTime(d time.Duration) Option {
	return func(cfg *config) error {
		if d < 0 || d > 20*time.Second {
			return fmt.Errorf("%w: wait time %v not in [0, 20s]", ErrInvalidOption, d)
		}
		cfg.waitTime = d
		return nil
	}
}

// WithVisibilityTimeout sets the visibility timeout requested on receive and
// the duration of node leases (default 30s; SQS rounds it up to whole
// seconds). While a job runs, the worker extends both every third of it.
func WithVisibilityTimeout(d time.Duration) Option {
	return func(cfg *config) error {
		if d <= 0 || d > 12*time.Hour {
			return fmt.Errorf("%w: visibility timeout %v not in [1s, 12h]", ErrInvalidOption, d)
		}
		cfg.visibilityTimeout = d
		return nil
	}
}

// WithRetryBackoff makes node retry delays grow: the delay before attempt
// n+1 is retryDelay × multiplier^(n-1), capped at max, then spread by ±jitter
// (a fraction in [0, 1]). The default is a fixed retryDelay.
func WithRetryBackoff(multiplier float64, max time.Duration, jitter float64) Option {
	return func(cfg *config) error {
		if multiplier < 1 || max <= 0 || jitter < 0 || jitter > 1 {
			return fmt.Errorf("%w: retry backoff multiplier %v, max %v, jitter %v", ErrInvalidOption, multiplier, max, jitter)
		}
		cfg.retryMultiplier, cfg.retryMaxDelay, cfg.retryJitter = multiplier, max, jitter
		return nil
	}
}

// Tuning holds a worker's performance settings, for WithTuning. A zero
// field keeps its default; BENCHMARKS.md measures what they save.
type Tuning struct {
	// ReceiveWindow is how long a busy worker, with fewer than half of its
	// slots free, waits for more to free up before it receives, so that a
	// receive fetches several messages (default 50ms, at most 1s; negative:
	// no wait).
	ReceiveWindow time.Duration
	// DeleteLinger is how long a finished job's delete waits for others to
	// share its DeleteMessageBatch (default 1s, at most 1s and a sixth of
	// the visibility timeout; negative: no wait). Ten waiting deletes go at
	// once, and none waits once Run drains. The job's worker slot is
	// already free and its successors sent by then, so the linger costs no
	// latency; the message only stays in flight a little longer.
	DeleteLinger time.Duration
	// PollBackoffMin and PollBackoffMax bound the jittered, doubling backoff
	// between failed polls (default 100ms to 10s).
	PollBackoffMin, PollBackoffMax time.Duration
	// MaxInlineInput is the largest input, in JSON bytes, carried inside a
	// job message (default 64 KiB, at most 200 KiB); a larger one is read
	// from the store by the node. Negative: inputs are never carried.
	MaxInlineInput int
	// CoordinationTTL is how long join records are kept (default 7 days, at
	// least a minute): it must outlive the longest run.
	CoordinationTTL time.Duration
	// DrainTimeout bounds how long Run waits for in-flight jobs when its
	// ctx is cancelled (default 30s; negative: no wait). Shutdown uses its
	// own ctx instead.
	DrainTimeout time.Duration
	// ChainNodes is how many jobs a message may run inline after its own,
	// one after the other, instead of sending each and receiving it again:
	// each is the only taken successor of the node before it and has no
	// other predecessor (default 16, at most 64; negative: none, every
	// successor is sent). ChainTime stops a chain that has run this long
	// (default 1s): its next job is sent, behind the jobs of other runs.
	// The worker slot and the message stay with the chain meanwhile; the
	// chain's jobs are as safe as sent ones (docs/protocol.md).
	ChainNodes int
	ChainTime  time.Duration
	// Retention is how long a finished run is kept (default 0: forever,
	// at no cost; otherwise at least an hour). When a run finishes —
	// completed, failed, or cancelled — every item of the run in the
	// context and status tables gets a DynamoDB TTL of its finish time
	// plus Retention (ContextStore.ExpireRun: one write per item, see
	// docs/aws.md), and from then on GetRun, WaitForRun and the CLI report
	// ErrRunNotFound for it, even before DynamoDB deletes its items
	// (lazily, up to days later). It should exceed the queue's message
	// retention period (or use WithRunCheck): a job message of an expired
	// run delivered later finds no records and runs its node again. Set it
	// on every worker and on the processes that call CancelRun. A
	// subflow's child run is a run of its own and expires on its own,
	// Retention after it finishes. SqsAdapter.DeleteRun deletes a finished
	// run's data at once.
	Retention time.Duration
}

// WithTuning sets the performance settings of Tuning that are not zero.
func WithTuning(t Tuning) Option {
	return func(cfg *config) error {
		var errs []error
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...))
		}
		if t.ReceiveWindow > time.Second || t.DeleteLinger > time.Second {
			bad("batching windows %v, %v over 1s", t.ReceiveWindow, t.DeleteLinger)
		}
		minB, maxB := cmp.Or(t.PollBackoffMin, cfg.pollBackoffMin), cmp.Or(t.PollBackoffMax, cfg.pollBackoffMax)
		if minB < 0 || maxB < minB {
			bad("poll backoff [%v, %v]", minB, maxB)
		}
		if t.MaxInlineInput > 200<<10 {
			bad("max inline input %d over 200 KiB", t.MaxInlineInput)
		}
		if t.ChainNodes > maxChainDepth || t.ChainTime < 0 {
			bad("chain of %d nodes for %v (at most %d nodes, a time not negative)", t.ChainNodes, t.ChainTime, maxChainDepth)
		}
		if t.CoordinationTTL != 0 && t.CoordinationTTL < time.Minute {
			bad("coordination TTL %v < 1m", t.CoordinationTTL)
		}
		if t.Retention != 0 && t.Retention < time.Hour {
			bad("retention %v < 1h", t.Retention)
		}
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		if t.ReceiveWindow != 0 {
			cfg.receiveBatchWindow = max(t.ReceiveWindow, 0)
		}
		if t.DeleteLinger != 0 {
			cfg.deleteLinger = max(t.DeleteLinger, 0)
		}
		cfg.pollBackoffMin, cfg.pollBackoffMax = minB, maxB
		if t.MaxInlineInput != 0 {
			cfg.maxInlineInput = max(t.MaxInlineInput, 0)
		}
		if t.CoordinationTTL != 0 {
			cfg.coordinationTTL = t.CoordinationTTL
		}
		if t.Retention != 0 {
			cfg.retention = t.Retention
		}
		if t.ChainNodes != 0 {
			cfg.chainNodes = max(t.ChainNodes, 0)
		}
		if t.ChainTime != 0 {
			cfg.chainTime = t.ChainTime
		}
		if t.DrainTimeout != 0 {
			cfg.drainTimeout = max(t.DrainTimeout, 0)
		}
		return nil
	}
}

// WithRunCheck makes the worker read a job's run record before running it,
// and refuse jobs that name a run that does not exist, or a blueprint other
// than the run's: the message is left for the queue's redrive policy. It
// costs one read per node. It is off by default: the jobs the library sends
// always name an existing run and its blueprint, and the nodes of finished
// runs are closed without it; turn it on when other producers write to the
// queue.
func WithRunCheck() Option {
	return func(cfg *config) error {
		cfg.checkRuns = true
		return nil
	}
}

// defaultNodeTimeout: see WithNodeTimeout.
const defaultNodeTimeout = 5 * time.Minute

// WithNodeTimeout bounds each attempt of the nodes whose config.timeout is
// 0, fallbacks included (default 5m; 0: no bound). The heartbeat extends a
// running node's message and lease for as long as it runs, so nothing else
// ends a node that never returns: it would hold a worker slot, and its run,
// forever. With the default, such a run fails within 5m per attempt with
// an error naming the node. Raise it, or set config.timeout, for nodes that
// legitimately run longer. The bound is enforced as NodeConfig.Timeout
// says. Whatever the timeout, a node running for longer than the visibility
// timeout is logged at WARN ("node still running") every visibility
// timeout, at most a minute apart.
func WithNodeTimeout(d time.Duration) Option {
	return func(cfg *config) error {
		if d < 0 {
			return fmt.Errorf("%w: negative node timeout %v", ErrInvalidOption, d)
		}
		cfg.nodeTimeout = d
		return nil
	}
}

// WithMiddleware wraps every node attempt, fallbacks included, in mw: the
// first given is the outermost, and later calls wrap inside earlier ones.
// Middleware runs under the attempt's timeout with the attempt's ctx and
// NodeContext; a panic in it fails the attempt like a node's panic.
func WithMiddleware(mw ...func(next NodeFunc) NodeFunc) Option {
	return func(cfg *config) error {
		for i, m := range mw {
			if m == nil {
				return fmt.Errorf("%w: middleware #%d is nil", ErrInvalidOption, i)
			}
		}
		cfg.middleware = append(cfg.middleware, mw...)
		return nil
	}
}
