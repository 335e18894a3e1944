package chaos

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dynamodbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/internal/runindex"
	"github.com/flowcraft/sqsadapter/otelsqsadapter"
	storepkg "github.com/flowcraft/sqsadapter/store"
)

// Config configures one chaos session. The zero value of a field means its
// default, except where noted.
type Config struct {
	// SQSEndpoint and DynamoDBEndpoint are the emulators' URLs, on
	// loopback (required).
	SQSEndpoint, DynamoDBEndpoint string

	// Seed makes the runs' initial contexts and the fault, kill and
	// duplicate decisions reproducible (the interleaving of the processes
	// is not). Zero picks a random seed; Summary.Seed reports it.
	Seed uint64

	Runs     int // runs to execute (default 24)
	InFlight int // runs started and not yet finished at any time (default: all)

	Workers           int           // worker processes (default 3)
	Concurrency       int           // jobs in flight per worker (default 8)
	VisibilityTimeout time.Duration // workers' message visibility and node lease (default 3s)
	// SlowFactor sets how long the slow node sleeps, in visibility
	// timeouts (default 2.5): it outlives the visibility timeout, so its
	// worker must extend it.
	SlowFactor      float64
	ShutdownTimeout time.Duration // workers' graceful shutdown deadline (default 5s)
	// Retention is the Tuning.Retention of the workers, the driver's
	// client and its resumer (0: none). With one, every item of each
	// finished run, and its run record, must carry the DynamoDB TTL
	// attribute ttl = its finish time + Retention once the queue drained.
	Retention time.Duration

	// KillMin and KillMax bound the random interval between two worker
	// kills (SIGKILL, then a restart); KillMax zero means no kills. Kills
	// happen while runs are unfinished.
	KillMin, KillMax time.Duration

	// FaultRate is the share of proxied requests that get a fault: an
	// HTTP 500, a throttling error, a connection reset or added latency,
	// each before or after forwarding (default 0: none).
	FaultRate float64
	// MaxLatency is the longest latency fault (default 800ms).
	MaxLatency time.Duration
	// DuplicateRate is the share of received messages the SQS proxy sends
	// again (default 0: none).
	DuplicateRate float64
	// CancelRate is the share of the runs whose first resume of a waiting
	// node races a CancelRun of the run (default 0: none).
	CancelRate float64

	// RunTimeout bounds the time from the first StartRun until every run
	// has finished (default 3m); a run unfinished by then is lost.
	RunTimeout time.Duration
	// DrainTimeout bounds the wait for the queue to empty once every run
	// has finished (default 60s).
	DrainTimeout time.Duration

	// WorkerBinary is a prebuilt chaos worker; empty builds one.
	WorkerBinary string
	// WorkDir holds the build and the workers' logs; empty makes a
	// temporary folder, removed when the session passes.
	WorkDir string
	// LogLevel is the workers' log level (default "warn").
	LogLevel string
	// KeepResources keeps the queues and tables for inspection.
	KeepResources bool
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

func (c Config) withDefaults() (Config, error) {
	if c.SQSEndpoint == "" || c.DynamoDBEndpoint == "" {
		return c, errors.New("chaos: the SQS and DynamoDB emulator endpoints are required")
	}
	for _, e := range []string{c.SQSEndpoint, c.DynamoDBEndpoint} {
		if !isLoopback(e) {
			return c, fmt.Errorf("chaos: endpoint %q is not on loopback", e)
		}
	}
	if c.Seed == 0 {
		c.Seed = mrand.Uint64()%1_000_000_000 + 1
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Runs, 24)
	def(&c.InFlight, c.Runs)
	def(&c.Workers, 3)
	def(&c.Concurrency, 8)
	defDur(&c.VisibilityTimeout, 3*time.Second)
	if c.VisibilityTimeout < time.Second {
		return c, errors.New("chaos: the visibility timeout is at least 1s")
	}
	if c.SlowFactor <= 0 {
		c.SlowFactor = 2.5
	}
	defDur(&c.ShutdownTimeout, 5*time.Second)
	defDur(&c.MaxLatency, 800*time.Millisecond)
	defDur(&c.RunTimeout, 3*time.Minute)
	defDur(&c.DrainTimeout, time.Minute)
	if c.KillMax > 0 && c.KillMin <= 0 {
		c.KillMin = c.KillMax / 2
	}
	if c.KillMax < c.KillMin {
		return c, errors.New("chaos: KillMax < KillMin")
	}
	if c.FaultRate < 0 || c.FaultRate > 0.5 || c.DuplicateRate < 0 || c.DuplicateRate > 1 || c.CancelRate < 0 || c.CancelRate > 1 {
		return c, errors.New("chaos: FaultRate must be in [0, 0.5], DuplicateRate and CancelRate in [0, 1]")
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c, nil
}

// Summary is the outcome of a chaos session.
type Summary struct {
	Seed                                              uint64
	Runs, Completed, Failed, Cancelled, Correct, Lost int
	Deleted                                           int // runs the driver deleted as they finished
	Workers, Kills                                    int
	Crashes                                           []string // workers that exited on their own
	Faults                                            FaultCounts
	HiddenWrites                                      int64 // commits and final statuses applied while the client saw a fault
	Duplicates                                        int64 // job copies sent
	Commits, DuplicateCommits                         int   // applied node commits; those beyond the first of a node
	MissingCommits, UnexpectedCommits                 int   // nodes that ran without a commit; commits of nodes that should not run
	DoubleFinishes, MissingFinishes                   int   // runs whose final status was written more than once; not at all
	// The waiting nodes: those the driver resumed (by a call it saw
	// succeed, or HiddenResumes: by a call whose answer a fault replaced),
	// its calls and how many were refused (ErrNotWaiting, ErrRunFinished)
	// as they must be, webhook deliveries among the calls, and the
	// failures: a node resumed twice, a completed run's node never
	// resumed, a finished run with a node still waiting.
	Resumed, HiddenResumes, ResumeCalls, Refused, Deliveries int
	DoubleResumes, MissedResumes, WaitingAtEnd               int
	Sleeps                                                   int // sleep nodes woken by their timers in completed runs
	Queue, DLQ, Running                                      int // messages left in the queue and the dead-letter queue; runs left running
	WorkerStops                                              []string
	Elapsed                                                  time.Duration
	// Problems lists every failed check, with diagnostics; empty means
	// the session passed.
	Problems []string
	// LogDir holds the workers' logs.
	LogDir string
}

// OK reports whether every check passed.
func (s Summary) OK() bool { return len(s.Problems) == 0 }

// String is the one-line summary.
func (s Summary) String() string {
	verdict := "PASS"
	if !s.OK() {
		verdict = fmt.Sprintf("FAIL (%d problems)", len(s.Problems))
	}
	share := 0.0
	if s.Faults.Requests > 0 {
		share = 100 * float64(s.Faults.Faulted()) / float64(s.Faults.Requests)
	}
	var kinds []string
	for _, k := range FaultKinds {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, s.Faults.ByKind[k]))
	}
	return fmt.Sprintf("chaos: seed=%d runs=%d (completed=%d failed=%d cancelled=%d deleted=%d) correct=%d/%d lost=%d | workers=%d kills=%d crashes=%d | "+
		"requests=%d faulted=%d (%.1f%%: %s; before=%d after=%d; hidden-writes=%d) duplicates=%d | "+
		"commits=%d duplicate-commits=%d missing-commits=%d double-finishes=%d | "+
		"waits: resumed=%d (hidden=%d) calls=%d (webhook=%d) refused=%d sleeps=%d double-resumes=%d missed-resumes=%d waiting-at-end=%d | "+
		"queue=%d dlq=%d running=%d | %s | verdict=%s",
		s.Seed, s.Runs, s.Completed, s.Failed, s.Cancelled, s.Deleted, s.Correct, s.Runs, s.Lost, s.Workers, s.Kills, len(s.Crashes),
		s.Faults.Requests, s.Faults.Faulted(), share, strings.Join(kinds, " "), s.Faults.Before, s.Faults.After, s.HiddenWrites, s.Duplicates,
		s.Commits, s.DuplicateCommits, s.MissingCommits, s.DoubleFinishes,
		s.Resumed, s.HiddenResumes, s.ResumeCalls, s.Deliveries, s.Refused, s.Sleeps, s.DoubleResumes, s.MissedResumes, s.WaitingAtEnd,
		s.Queue, s.DLQ, s.Running, s.Elapsed.Round(time.Second), verdict)
}

// run is one workflow run of a session.
type run struct {
	i       int
	id      string
	initial map[string]any
	exp     *interp.Result
	resumes map[string]interp.Outcome // the model's resume of each wait and webhook node the run reaches
	started bool
	st      *sqsadapter.RunStatus
	// deleted: the driver deleted the run as soon as it finished (one in
	// five), while its last handlings and their copies may still come.
	deleted bool
}

// Run executes a chaos session: fresh queues and tables, worker processes
// behind the fault-injecting proxies, runs started and awaited, workers
// killed and restarted, then every check. It returns an error only when the
// session could not be carried out (setup, build); failed checks are in the
// Summary.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Summary{}, err
	}
	began := time.Now()
	sum := Summary{Seed: cfg.Seed, Runs: cfg.Runs, Workers: cfg.Workers}
	logf := cfg.Logf
	bp, err := Blueprint()
	if err != nil {
		return sum, err
	}
	all, err := Blueprints()
	if err != nil {
		return sum, err
	}

	workDir, removeWorkDir := cfg.WorkDir, false
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "sqsadapter-chaos-"); err != nil {
			return sum, err
		}
		removeWorkDir = true
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return sum, err
	}
	sum.LogDir = workDir
	defer func() {
		if removeWorkDir && sum.OK() {
			_ = os.RemoveAll(workDir)
		}
	}()

	// Clients straight to the emulators: setup, the runs' client, checks.
	creds := credentials.NewStaticCredentialsProvider("test", "test", "")
	sqsDirect := sqs.New(sqs.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(cfg.SQSEndpoint)})
	ddbDirect := dynamodb.New(dynamodb.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(cfg.DynamoDBEndpoint),
		DisableValidateResponseChecksum: true})

	base := fmt.Sprintf("chaos-%d-%s", cfg.Seed, strings.ToLower(rand.Text()[:6]))
	tables := sqsadapter.TableNames{Context: base + "-context", Status: base + "-status", Coordination: base + "-coordination"}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelSetup()
	queueURL, dlqURL, err := createQueues(setupCtx, sqsDirect, base+"-jobs", base+"-dlq")
	if !cfg.KeepResources {
		defer deleteResources(sqsDirect, ddbDirect, []string{queueURL, dlqURL}, tables, logf)
	}
	if err != nil {
		return sum, err
	}
	if err := sqsadapter.CreateTables(setupCtx, ddbDirect, tables); err != nil {
		return sum, fmt.Errorf("chaos: create tables: %w", err)
	}

	bin := cfg.WorkerBinary
	if bin == "" {
		logf("building the chaos worker")
		if bin, err = BuildWorker(setupCtx, workDir); err != nil {
			return sum, err
		}
	}

	inj := NewInjector(cfg.Seed, cfg.FaultRate, cfg.MaxLatency)
	ledger := NewLedger(tables.Context, tables.Status)
	dups := NewDuplicator(sqsDirect, cfg.Seed, cfg.DuplicateRate, cfg.VisibilityTimeout)
	defer dups.Stop()
	sqsProxy, err := NewProxy(ServiceSQS, cfg.SQSEndpoint, inj, dups.Observe)
	if err != nil {
		return sum, err
	}
	defer sqsProxy.Close()
	ddbProxy, err := NewProxy(ServiceDynamoDB, cfg.DynamoDBEndpoint, inj, ledger.Observe)
	if err != nil {
		return sum, err
	}
	defer ddbProxy.Close()

	env := workerEnv(sqsProxy.URL(), ddbProxy.URL(), queueURL, tables)
	if cfg.Retention > 0 {
		env = append(env, "SQSADAPTER_RETENTION="+cfg.Retention.String())
	}
	args := []string{
		"-concurrency", strconv.Itoa(cfg.Concurrency),
		"-visibility-timeout", cfg.VisibilityTimeout.String(),
		"-slow", time.Duration(float64(cfg.VisibilityTimeout) * cfg.SlowFactor).String(),
		"-shutdown-timeout", cfg.ShutdownTimeout.String(),
		"-log-level", cfg.LogLevel,
	}
	workers, err := newPool(bin, args, env, workDir, cfg.Workers, logf)
	if err != nil {
		return sum, err
	}
	stopGrace := cfg.ShutdownTimeout + 15*time.Second
	defer workers.stop(stopGrace)
	logf("seed %d: %d runs, %d workers, faults %.1f%%, duplicates %.1f%%, kills every %v-%v; logs in %s",
		cfg.Seed, cfg.Runs, cfg.Workers, 100*cfg.FaultRate, 100*cfg.DuplicateRate, cfg.KillMin, cfg.KillMax, workDir)

	// The client starts runs with telemetry, so that their start jobs
	// carry trace context into the workers (which carry telemetry too).
	tel, err := otelsqsadapter.New(otelsqsadapter.WithTracerProvider(sdktrace.NewTracerProvider()))
	if err != nil {
		return sum, err
	}
	client, err := sqsadapter.NewSqsAdapter(
		tel.Option(),
		sqsadapter.WithSQSClient(sqsDirect),
		sqsadapter.WithQueueURL(queueURL),
		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(ddbDirect, tables.Context, tables.Status)),
		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(ddbDirect, tables.Coordination)),
		sqsadapter.WithRegistry(Registry(bp, 0)),
		sqsadapter.WithBlueprints(all...),
		sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		sqsadapter.WithTuning(sqsadapter.Tuning{Retention: cfg.Retention}),
	)
	if err != nil {
		return sum, err
	}

	// The driver's resumer: its own adapter, through the proxies.
	resAdapter, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(sqs.New(sqs.Options{Region: "us-east-1", Credentials: creds, BaseEndpoint: aws.String(sqsProxy.URL())})),
		sqsadapter.WithQueueURL(queueURL),
		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(dynamodb.New(dynamodb.Options{Region: "us-east-1", Credentials: creds,
			BaseEndpoint: aws.String(ddbProxy.URL()), DisableValidateResponseChecksum: true}), tables.Context, tables.Status)),
		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(dynamodb.New(dynamodb.Options{Region: "us-east-1", Credentials: creds,
			BaseEndpoint: aws.String(ddbProxy.URL()), DisableValidateResponseChecksum: true}), tables.Coordination)),
		sqsadapter.WithRegistry(Registry(bp, 0)),
		sqsadapter.WithBlueprints(all...),
		sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		sqsadapter.WithTuning(sqsadapter.Tuning{Retention: cfg.Retention}),
	)
	if err != nil {
		return sum, err
	}
	resCtx, stopResuming := context.WithCancel(ctx)
	res := newResumer(resAdapter, cfg.Seed, cfg.CancelRate)
	defer func() {
		stopResuming()
		res.stop()
	}()

	runs := make([]*run, cfg.Runs)
	for i := range runs {
		r := &run{i: i, id: fmt.Sprintf("run-%04d", i), initial: Initial(cfg.Seed, i)}
		if r.exp, r.resumes, err = Expect(bp, r.initial); err != nil {
			return sum, err
		}
		runs[i] = r
	}

	// The killer: SIGKILL a random worker at random moments, restart it.
	killCtx, stopKilling := context.WithCancel(ctx)
	var killerDone sync.WaitGroup
	var killErr error
	if cfg.KillMax > 0 {
		killerDone.Go(func() {
			r := mrand.New(mrand.NewPCG(cfg.Seed, 0x5c1))
			for {
				d := cfg.KillMin + time.Duration(r.Int64N(int64(cfg.KillMax-cfg.KillMin)+1))
				if !sleepCtx(killCtx, d) {
					return
				}
				if _, err := workers.kill(r.IntN(cfg.Workers)); err != nil {
					killErr = err
					return
				}
			}
		})
	}

	// Start the runs, at most InFlight at a time, and wait for them.
	deadline := time.Now().Add(cfg.RunTimeout)
	next, inFlight, finished := 0, 0, 0
	lastReport := time.Now()
	for finished < len(runs) && time.Now().Before(deadline) && ctx.Err() == nil {
		for next < len(runs) && inFlight < cfg.InFlight {
			r := runs[next]
			if err := startRun(ctx, client, r); err != nil {
				stopKilling()
				killerDone.Wait()
				return sum, err
			}
			res.follow(resCtx, r, r.resumes)
			next++
			inFlight++
		}
		for _, r := range runs[:next] {
			if r.st != nil {
				continue
			}
			gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			st, err := client.GetRun(gctx, r.id)
			cancel()
			if err == nil && st.Finished() {
				r.st = st
				finished++
				inFlight--
				if r.i%5 == 2 {
					dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					if err := client.DeleteRun(dctx, r.id); err != nil {
						sum.Problems = append(sum.Problems, fmt.Sprintf("run %s: DeleteRun: %v", r.id, err))
					} else {
						r.deleted = true
						sum.Deleted++
					}
					cancel()
				}
			}
		}
		if time.Since(lastReport) > 15*time.Second {
			kills, _, _, _ := workers.stats()
			logf("%d/%d runs finished, %d in flight, %d kills, %d requests faulted of %d",
				finished, len(runs), inFlight, kills, inj.Counts().Faulted(), inj.Counts().Requests)
			lastReport = time.Now()
		}
		sleepCtx(ctx, time.Second)
	}
	stopKilling()
	killerDone.Wait()
	stopResuming()
	res.stop()
	if killErr != nil {
		sum.Problems = append(sum.Problems, killErr.Error())
	}

	// Drain: no more copies; the workers clear what is left (copies of
	// finished jobs, messages of killed workers coming back).
	dups.Stop()
	sum.Queue = drain(ctx, sqsDirect, queueURL, cfg.DrainTimeout, logf)
	workers.stop(stopGrace)
	inj.SetEnabled(false)

	// Checks.
	vctx, cancelVerify := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelVerify()
	var hangs []string
	sum.Kills, sum.Crashes, sum.WorkerStops, hangs = workers.stats()
	sum.Problems = append(sum.Problems, hangs...)
	sum.Problems = append(sum.Problems, sum.Crashes...)
	sum.Faults = inj.Counts()
	sum.HiddenWrites = ledger.Hidden()
	sum.Duplicates = dups.Sent()
	if n := ledger.Unparsable(); n > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d applied DynamoDB writes could not be decoded by the ledger", n))
	}
	store := sqsadapter.NewDynamoDbContext(ddbDirect, tables.Context, tables.Status)
	detailed := 0
	for _, r := range runs {
		problems := verifyRun(r, ledger, res, &sum)
		switch {
		case r.deleted:
			problems = append(problems, verifyDeleted(vctx, store, r)...)
		case cfg.Retention > 0 && r.st != nil:
			problems = append(problems, verifyRetention(vctx, ddbDirect, tables, r, cfg.Retention)...)
		}
		if len(problems) == 0 {
			sum.Correct++
			continue
		}
		msg := fmt.Sprintf("run %s (%s): %s", r.id, compact(r.initial), strings.Join(problems, "; "))
		if detailed < 5 {
			detailed++
			msg += "\n" + diagnose(vctx, store, r, ledger, res, workers)
		}
		sum.Problems = append(sum.Problems, msg)
	}
	if sum.Queue != 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("the queue did not drain: %d message(s) left", sum.Queue))
	}
	if n, err := queueDepth(vctx, sqsDirect, dlqURL); err != nil {
		sum.Problems = append(sum.Problems, fmt.Sprintf("dead-letter queue: %v", err))
	} else if sum.DLQ = n; n > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d message(s) dead-lettered: %s", n, peek(vctx, sqsDirect, dlqURL)))
	}
	if n, err := runningRuns(vctx, ddbDirect, tables.Status); err != nil {
		sum.Problems = append(sum.Problems, fmt.Sprintf("running runs: %v", err))
	} else if sum.Running = n; n > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d run(s) left running in the status table's running-runs index", n))
	}
	sum.Problems = append(sum.Problems, res.problems()...)
	if sum.Lost > 0 {
		sum.Problems = append(sum.Problems, fmt.Sprintf("%d run(s) lost: not finished within %v", sum.Lost, cfg.RunTimeout))
	}
	sum.Elapsed = time.Since(began)
	return sum, nil
}

// verifyRun checks one run against the interpreter, the ledger and the
// driver's resumes.
func verifyRun(r *run, ledger *Ledger, res *resumer, sum *Summary) []string {
	if r.st == nil {
		sum.Lost++
		return []string{"lost: not finished"}
	}
	var problems []string
	cancel := res.cancelled(r.id)
	switch r.st.Status {
	case sqsadapter.StatusCompleted:
		sum.Completed++
	case sqsadapter.StatusFailed:
		sum.Failed++
	case sqsadapter.StatusCancelled:
		sum.Cancelled++
	}
	if r.st.Status == sqsadapter.StatusCancelled {
		// Only the driver cancels, and the interpreter does not model it.
		if cancel == nil {
			problems = append(problems, "cancelled, but the driver did not cancel it")
		}
	} else {
		problems = append(problems, r.exp.Check(r.st)...)
		if cancel != nil && cancel.Succeeded > 0 {
			problems = append(problems, fmt.Sprintf("CancelRun succeeded, but the run ended %s", r.st.Status))
		}
	}

	commits := ledger.Commits(r.id)
	for _, node := range sortedKeys(commits) {
		c := commits[node]
		sum.Commits += c.Commits
		if c.Commits > 1 {
			sum.DuplicateCommits += c.Commits - 1
			problems = append(problems, fmt.Sprintf("node %s committed %d times", node, c.Commits))
		}
		if !expectedCommit(r.exp, node) {
			sum.UnexpectedCommits++
			problems = append(problems, fmt.Sprintf("node %s committed, but the interpreter has it %s", node, orText(string(r.exp.States[node]), "not a node")))
		}
	}
	if r.st.Status == sqsadapter.StatusCompleted {
		for _, node := range ranRecords(r.exp) {
			if commits[node].Commits == 0 {
				sum.MissingCommits++
				problems = append(problems, fmt.Sprintf("node %s ran, but no commit of it was applied", node))
			}
		}
	}
	problems = append(problems, verifyWaits(r, commits, res.Tallies(r.id), sum)...)
	f := ledger.Finishes(r.id)
	switch {
	case f.Writes == 0:
		sum.MissingFinishes++
		problems = append(problems, "no write of the final status was applied")
	case f.Writes > 1:
		sum.DoubleFinishes++
		problems = append(problems, fmt.Sprintf("final status written %d times: %v", f.Writes, f.Statuses))
	case f.Statuses[0] != string(r.st.Status):
		problems = append(problems, fmt.Sprintf("final status written as %s, read as %s", f.Statuses[0], r.st.Status))
	}
	return problems
}

// verifyDeleted checks a run deleted as it finished, once the queue
// drained: absent, no value left, every node record a closed and empty
// tombstone. (A node run again after the deletion would show in the
// ledger as a second commit, which verifyRun reports.)
func verifyDeleted(ctx context.Context, cs sqsadapter.ContextStore, r *run) []string {
	var problems []string
	if _, err := cs.GetRun(ctx, r.id); !errors.Is(err, sqsadapter.ErrRunNotFound) {
		problems = append(problems, fmt.Sprintf("deleted run: GetRun returned %v, not ErrRunNotFound", err))
	}
	if snap, err := cs.Snapshot(ctx, r.id); err != nil || len(snap) > 0 {
		problems = append(problems, fmt.Sprintf("deleted run: %d value(s) left (%v)", len(snap), err))
	}
	recs, err := cs.ListNodes(ctx, r.id)
	if err != nil {
		problems = append(problems, fmt.Sprintf("deleted run: list node records: %v", err))
	}
	for id, rec := range recs {
		if rec.State != storepkg.NodeClosed || rec.Output != nil {
			problems = append(problems, fmt.Sprintf("deleted run: node record %q is %s, not a closed tombstone", id, rec.State))
		}
	}
	return problems
}

// verifyRetention checks, with the raw items, that every item of finished
// run r in the context table and its run record carry the TTL attribute
// ttl: its finish time (to the millisecond, as stored) plus retention, in
// epoch seconds rounded up.
func verifyRetention(ctx context.Context, db *dynamodb.Client, t sqsadapter.TableNames, r *run, retention time.Duration) []string {
	at := r.st.FinishedAt.Truncate(time.Millisecond).Add(retention)
	want := at.Unix()
	if at.After(time.Unix(want, 0)) {
		want++
	}
	ttlOf := func(item map[string]dynamodbtypes.AttributeValue) string {
		if n, ok := item["ttl"].(*dynamodbtypes.AttributeValueMemberN); ok {
			return n.Value
		}
		return "none"
	}
	wantS := strconv.FormatInt(want, 10)
	var problems []string
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(t.Status), ConsistentRead: aws.Bool(true),
		Key: map[string]dynamodbtypes.AttributeValue{"runId": &dynamodbtypes.AttributeValueMemberS{Value: r.id}},
	})
	switch {
	case err != nil:
		return []string{fmt.Sprintf("retention: read the run record: %v", err)}
	case ttlOf(out.Item) != wantS:
		problems = append(problems, fmt.Sprintf("retention: the run record's ttl is %s, want %s", ttlOf(out.Item), wantS))
	}
	pages := dynamodb.NewQueryPaginator(db, &dynamodb.QueryInput{
		TableName: aws.String(t.Context), ConsistentRead: aws.Bool(true),
		KeyConditionExpression:    aws.String("runId = :r"),
		ExpressionAttributeValues: map[string]dynamodbtypes.AttributeValue{":r": &dynamodbtypes.AttributeValueMemberS{Value: r.id}},
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return append(problems, fmt.Sprintf("retention: query the run's items: %v", err))
		}
		for _, item := range page.Items {
			if got := ttlOf(item); got != wantS {
				key, _ := item["key"].(*dynamodbtypes.AttributeValueMemberS)
				name := "?"
				if key != nil {
					name = key.Value
				}
				problems = append(problems, fmt.Sprintf("retention: item %q has ttl %s, want %s", name, got, wantS))
			}
		}
	}
	return problems
}

// verifyWaits checks the waiting nodes of a finished run: none waits any
// more; each wait and webhook node was resumed exactly once (in a
// completed run) or at most once, by the driver's calls — at most one of
// which succeeded, and one that succeeded took effect — and not at all if
// every call was told the run was finished; each sleep of a completed run
// was woken by its timer, not before its wake-up time.
func verifyWaits(r *run, commits map[string]CommitCount, tallies map[string]ResumeTally, sum *Summary) []string {
	var problems []string
	for _, id := range sortedKeys(r.st.Nodes) {
		if ns := r.st.Nodes[id]; ns.State == "waiting" {
			sum.WaitingAtEnd++
			problems = append(problems, fmt.Sprintf("the run is %s while node %s waits (%+v)", r.st.Status, id, ns.Wait))
		}
	}
	for _, id := range sortedKeys(tallies) {
		t := tallies[id]
		sum.ResumeCalls += t.Calls
		sum.Refused += t.NotWaiting + t.Finished
		if t.Kind == "webhook" {
			sum.Deliveries += t.Calls
		}
		if _, ok := r.resumes[id]; !ok {
			problems = append(problems, fmt.Sprintf("the driver resumed node %s, which the interpreter does not resume", id))
		}
		n := commits[id].Commits
		switch {
		case t.Succeeded > 1:
			sum.DoubleResumes++
			problems = append(problems, fmt.Sprintf("node %s resumed by %d calls (%s: %+v)", id, t.Succeeded, t.Mode, t))
		case t.Succeeded == 1 && n == 0:
			problems = append(problems, fmt.Sprintf("a resume of node %s succeeded, but no commit of it was applied", id))
		case t.Succeeded == 0 && n > 0 && t.Failed == 0 && t.NotWaiting == 0:
			problems = append(problems, fmt.Sprintf("node %s was resumed, but every call was told the run was finished (%+v)", id, t))
		}
		if n > 1 {
			sum.DoubleResumes++
		}
		if n > 0 {
			sum.Resumed++
			if t.Succeeded == 0 {
				sum.HiddenResumes++
			}
		}
	}
	if r.st.Status != sqsadapter.StatusCompleted {
		return problems
	}
	for _, id := range sortedKeys(r.resumes) {
		if commits[id].Commits == 0 || r.st.Nodes[id].State != "completed" {
			sum.MissedResumes++
			problems = append(problems, fmt.Sprintf("node %s of the completed run was never resumed (state %q)", id, r.st.Nodes[id].State))
		}
	}
	bp, _ := Blueprint()
	for _, d := range bp.Nodes {
		if d.Uses != "sleep" || !r.exp.Is(d.ID, interp.Ran) {
			continue
		}
		ns := r.st.Nodes[d.ID]
		switch {
		case ns.Wait == nil || ns.Wait.Reason != "timer":
			problems = append(problems, fmt.Sprintf("sleep node %s did not sleep (%+v)", d.ID, ns))
		case ns.UpdatedAt.Before(ns.Wait.WakeAt):
			problems = append(problems, fmt.Sprintf("sleep node %s woke at %v, before its wake-up time %v", d.ID, ns.UpdatedAt, ns.Wait.WakeAt))
		default:
			sum.Sleeps++
		}
	}
	return problems
}

// diagnose describes a run for a failure report: the interpreter's view,
// the node records, the ledger and the workers' log lines about it.
func diagnose(ctx context.Context, store *sqsadapter.DynamoDbContext, r *run, ledger *Ledger, res *resumer, workers *pool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "    interpreter: status %s; ran %v; skipped %v; failed %v; blocked %v\n", r.exp.Status,
		r.exp.Nodes(interp.Ran), r.exp.Nodes(interp.Skipped), r.exp.Nodes(interp.Failed), r.exp.Nodes(interp.Blocked))
	if r.st != nil {
		fmt.Fprintf(&b, "    engine: status %s; failed node %q; error %q\n", r.st.Status, r.st.FailedNode, r.st.Error)
	}
	bp, _ := Blueprint()
	var ids []string
	for _, d := range bp.Nodes {
		ids = append(ids, d.ID, d.ID+"@fallback")
	}
	if recs, err := store.GetNodes(ctx, r.id, ids); err == nil {
		for _, id := range sortedKeys(recs) {
			rec := recs[id]
			fmt.Fprintf(&b, "    node %s: %s attempts=%d taken=%v fallback=%q lease=%q wait=%+v\n", id, rec.State, rec.Attempts, rec.Taken, rec.Fallback, rec.LeaseOwner, rec.Wait)
		}
	} else {
		fmt.Fprintf(&b, "    node records: %v\n", err)
	}
	fmt.Fprintf(&b, "    ledger: commits %v; finishes %+v\n", ledger.Commits(r.id), ledger.Finishes(r.id))
	fmt.Fprintf(&b, "    resumes: %+v; cancel: %+v\n", res.Tallies(r.id), res.cancelled(r.id))
	for _, line := range workers.grep(`"`+r.id+`"`, 20) {
		fmt.Fprintf(&b, "    %s\n", line)
	}
	return strings.TrimRight(b.String(), "\n")
}

// startRun starts a run, retrying (with its run id: idempotent) a bounded
// number of times.
func startRun(ctx context.Context, client *sqsadapter.SqsAdapter, r *run) error {
	var err error
	for try := 0; try < 5; try++ {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = client.StartRun(sctx, BlueprintID, r.initial, sqsadapter.WithRunID(r.id))
		cancel()
		if err == nil {
			r.started = true
			return nil
		}
		if !sleepCtx(ctx, time.Second) {
			break
		}
	}
	return fmt.Errorf("chaos: start run %s: %w", r.id, err)
}

// createQueues creates the dead-letter queue and the job queue, whose
// redrive policy dead-letters a message after 50 receives.
func createQueues(ctx context.Context, client *sqs.Client, queue, dlq string) (queueURL, dlqURL string, err error) {
	d, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(dlq),
		Attributes: map[string]string{string(sqstypes.QueueAttributeNameMessageRetentionPeriod): "1209600"}})
	if err != nil {
		return "", "", fmt.Errorf("chaos: create queue %s: %w", dlq, err)
	}
	dlqURL = aws.ToString(d.QueueUrl)
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: d.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		return "", dlqURL, fmt.Errorf("chaos: ARN of %s: %w", dlq, err)
	}
	redrive, _ := json.Marshal(map[string]any{
		"deadLetterTargetArn": attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     50,
	})
	q, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(queue), Attributes: map[string]string{
		string(sqstypes.QueueAttributeNameVisibilityTimeout): "30",
		string(sqstypes.QueueAttributeNameRedrivePolicy):     string(redrive),
	}})
	if err != nil {
		return "", dlqURL, fmt.Errorf("chaos: create queue %s: %w", queue, err)
	}
	return aws.ToString(q.QueueUrl), dlqURL, nil
}

// deleteResources deletes the session's queues and tables.
func deleteResources(sq *sqs.Client, db *dynamodb.Client, queues []string, t sqsadapter.TableNames, logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range queues {
		if u == "" {
			continue
		}
		if _, err := sq.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)}); err != nil {
			logf("delete queue %s: %v", u, err)
		}
	}
	for _, name := range []string{t.Context, t.Status, t.Coordination} {
		_, err := db.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
		var notFound *dynamodbtypes.ResourceNotFoundException
		if err != nil && !errors.As(err, &notFound) {
			logf("delete table %s: %v", name, err)
		}
	}
}

// queueDepth is the number of messages in a queue: visible, in flight and
// delayed.
func queueDepth(ctx context.Context, client *sqs.Client, queueURL string) (int, error) {
	out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		}})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range []sqstypes.QueueAttributeName{
		sqstypes.QueueAttributeNameApproximateNumberOfMessages,
		sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed,
	} {
		v, err := strconv.Atoi(out.Attributes[string(a)])
		if err != nil {
			return 0, fmt.Errorf("queue attribute %s = %q", a, out.Attributes[string(a)])
		}
		n += v
	}
	return n, nil
}

// drain waits, at most timeout, until the queue is empty twice in a row a
// second apart, and returns the number of messages left.
func drain(ctx context.Context, client *sqs.Client, queueURL string, timeout time.Duration, logf func(string, ...any)) int {
	deadline := time.Now().Add(timeout)
	empty, left := 0, -1
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n, err := queueDepth(ctx, client, queueURL)
		if err != nil {
			logf("queue depth: %v", err)
		} else if left = n; n == 0 {
			if empty++; empty == 2 {
				return 0
			}
		} else {
			empty = 0
		}
		sleepCtx(ctx, time.Second)
	}
	if left < 0 {
		return 1 << 30 // never measured: report it as not drained
	}
	return left
}

// peek describes the first messages of a queue without consuming them for
// long (they come back after a second).
func peek(ctx context.Context, client *sqs.Client, queueURL string) string {
	out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(queueURL), MaxNumberOfMessages: 10, VisibilityTimeout: 1})
	if err != nil {
		return err.Error()
	}
	var bodies []string
	for _, m := range out.Messages {
		bodies = append(bodies, aws.ToString(m.Body))
	}
	return strings.Join(bodies, " ")
}

// runningRuns counts the runs in the status table's running-runs index,
// under every partition key value (runindex.SourceKey).
func runningRuns(ctx context.Context, db *dynamodb.Client, statusTable string) (int, error) {
	n := 0
	for source := range runindex.Sources {
		var start map[string]dynamodbtypes.AttributeValue
		for page := 0; ; page++ {
			if page == 1000 {
				return n, errors.New("too many pages")
			}
			out, err := db.Query(ctx, &dynamodb.QueryInput{
				TableName:                 aws.String(statusTable),
				IndexName:                 aws.String("running-runs"),
				KeyConditionExpression:    aws.String("gsiRunning = :r"),
				ExpressionAttributeValues: map[string]dynamodbtypes.AttributeValue{":r": &dynamodbtypes.AttributeValueMemberS{Value: runindex.SourceKey(source)}},
				Select:                    dynamodbtypes.SelectCount,
				ExclusiveStartKey:         start,
			})
			if err != nil {
				return 0, err
			}
			n += int(out.Count)
			if start = out.LastEvaluatedKey; len(start) == 0 {
				break
			}
		}
	}
	return n, nil
}

// workerEnv is the workers' environment: the proxies as the AWS endpoints,
// test credentials, the queue and the tables.
func workerEnv(sqsURL, ddbURL, queueURL string, t sqsadapter.TableNames) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "SQSADAPTER_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"AWS_ENDPOINT_URL_SQS="+sqsURL, "AWS_ENDPOINT_URL_DYNAMODB="+ddbURL,
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
		"SQSADAPTER_QUEUE_URL="+queueURL,
		"SQSADAPTER_CONTEXT_TABLE="+t.Context,
		"SQSADAPTER_STATUS_TABLE="+t.Status,
		"SQSADAPTER_COORDINATION_TABLE="+t.Coordination,
	)
}

// isLoopback reports whether an endpoint URL names this machine by a
// loopback IP address.
func isLoopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ranRecords lists the engine's records the interpreter predicts
// committed: those of the nodes that ran, and of each later pass of a loop
// node.
func ranRecords(exp *interp.Result) []string {
	ran := exp.Nodes(interp.Ran)
	for _, id := range sortedKeys(exp.Passes) {
		for _, k := range exp.Passes[id] {
			if k > 0 {
				ran = append(ran, passRecord(id, k))
			}
		}
	}
	return ran
}

// passRecord is the engine's record of pass k > 0 of loop node id: the id,
// U+001F, "@" and k (loop.go in the root package).
func passRecord(id string, k int) string { return id + "\x1f@" + strconv.Itoa(k) }

// expectedCommit reports whether the interpreter predicts a commit of the
// engine's record rid: a node that ran, or a loop pass it ran. A loop's
// done record ("<controller>\x1floop", the copy of the pass that broke) is
// internal: only its duplicates are checked.
func expectedCommit(exp *interp.Result, rid string) bool {
	if strings.HasSuffix(rid, "\x1floop") {
		return true
	}
	if id, n, ok := strings.Cut(rid, "\x1f@"); ok {
		k, err := strconv.Atoi(n)
		return err == nil && slices.Contains(exp.Passes[id], k)
	}
	return exp.Is(rid, interp.Ran)
}
