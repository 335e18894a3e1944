// Command worker is a production-shaped sqsadapter worker: copy it and
// replace the example nodes and blueprint with your own.
//
// It reads the AWS settings the standard way (config.LoadDefaultConfig:
// credentials, AWS_REGION, AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL_DYNAMODB,
// AWS_MAX_ATTEMPTS…), the queue and table names from the environment, logs
// JSON to stderr, and shuts down gracefully on SIGINT or SIGTERM.
//
// Environment:
//
//	SQSADAPTER_QUEUE_URL           the job queue's URL; if unset, the name below is resolved with GetQueueUrl
//	SQSADAPTER_QUEUE_NAME          the job queue's name (default flowcraft-jobs)
//	SQSADAPTER_DLQ_NAME            the dead-letter queue's name, for -setup (default <queue name>-dlq)
//	SQSADAPTER_CONTEXT_TABLE       run contexts and node records (default flowcraft-context)
//	SQSADAPTER_STATUS_TABLE        run records (default flowcraft-status)
//	SQSADAPTER_COORDINATION_TABLE  join records (default flowcraft-coordination)
//	SQSADAPTER_WORKER_ID           this worker's name in leases and logs (default <hostname>-<pid>)
//
// Modes:
//
//	worker -setup                  create the queue, its dead-letter queue and the tables (idempotent), then exit
//	worker [-concurrency 10]       run the worker until SIGINT or SIGTERM
//	worker -start -input '{…}'     start a run of the "order" blueprint, print its id, wait for it to
//	                               finish and print its final status and context as JSON
//	worker -health-addr :8080      also serve GET /healthz (200 while running, 503 once stopping)
//	worker -probe URL              exit 0 if URL answers 200, else 1 (a container's health check)
//
// Exit status: 0 on success (for -start: the run completed); 1 on an error,
// a run that failed or was cancelled, or a shutdown whose deadline cancelled
// running nodes (their jobs are redelivered to another worker); 2 on a usage
// error.
package main

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/flowcraft/sqsadapter"
)

// orderBlueprint is the example workflow: validate an order, fan out to
// three checks, join them ("all"), route on the decision's action
// (approve → charge, review → review, otherwise cancel) and notify the
// customer from whichever branch ran ("any").
//
//go:embed order.json
var orderBlueprint []byte

// defaultInput is the initial context -start uses without -input.
const defaultInput = `{"order": {"id": "o-1001", "customer": "c-42",
  "items": [{"sku": "A1", "qty": 2, "price": 12.5}, {"sku": "B2", "qty": 1, "price": 30}]}}`

// Queue settings of -setup; docs/aws.md explains each.
const (
	queueVisibilityTimeout = 30               // seconds; the worker sets its own on every receive
	queueWaitTime          = 20               // seconds of long polling
	queueRetention         = 4 * 24 * 3600    // seconds a job may wait for a worker (4 days)
	dlqRetention           = 14 * 24 * 3600   // seconds, the maximum: longer than the job queue's
	maxReceiveCount        = 20               // deliveries before a job is dead-lettered
	setupTimeout           = 5 * time.Minute  // bounds -setup
	startTimeoutDefault    = 10 * time.Minute // default of -wait
)

func main() {
	os.Exit(run())
}

// settings are the names the worker reads from the environment.
type settings struct {
	queueURL, queueName, dlqName string
	tables                       sqsadapter.TableNames
	workerID                     string
}

func settingsFromEnv() settings {
	s := settings{
		queueURL:  os.Getenv("SQSADAPTER_QUEUE_URL"),
		queueName: envOr("SQSADAPTER_QUEUE_NAME", "flowcraft-jobs"),
		tables: sqsadapter.TableNames{
			Context:      envOr("SQSADAPTER_CONTEXT_TABLE", "flowcraft-context"),
			Status:       envOr("SQSADAPTER_STATUS_TABLE", "flowcraft-status"),
			Coordination: envOr("SQSADAPTER_COORDINATION_TABLE", "flowcraft-coordination"),
		},
	}
	if s.queueURL != "" && os.Getenv("SQSADAPTER_QUEUE_NAME") == "" {
		// A queue URL ends with the queue's name.
		s.queueName = s.queueURL[strings.LastIndex(s.queueURL, "/")+1:]
	}
	s.dlqName = envOr("SQSADAPTER_DLQ_NAME", s.queueName+"-dlq")
	host, _ := os.Hostname()
	s.workerID = envOr("SQSADAPTER_WORKER_ID", fmt.Sprintf("%s-%d", host, os.Getpid()))
	return s
}

// checkConfig names what the AWS configuration lacks before any request
// fails on it: a region, or credentials.
func checkConfig(ctx context.Context, cfg aws.Config) error {
	if cfg.Region == "" {
		return errors.New("no AWS region: set AWS_REGION (or a region in the shared config's profile)")
	}
	if cfg.Credentials == nil {
		return errors.New("no AWS credentials provider")
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cfg.Credentials.Retrieve(cctx); err != nil {
		return fmt.Errorf("no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared config, or an IAM role of the task, pod or instance): %w", err)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run() int {
	var (
		setup           = flag.Bool("setup", false, "create the queue, its dead-letter queue and the tables if they do not exist, then exit")
		start           = flag.Bool("start", false, "start a run of the order blueprint with -input, print its id, wait for it and print its final status as JSON; does not run the worker")
		input           = flag.String("input", defaultInput, "initial context of the run that -start starts: a JSON object")
		runID           = flag.String("run-id", "", "run id for -start, which makes starting idempotent (default: random)")
		wait            = flag.Duration("wait", startTimeoutDefault, "how long -start waits for the run to finish")
		concurrency     = flag.Int("concurrency", 10, "how many jobs the worker runs at once")
		visibility      = flag.Duration("visibility-timeout", 30*time.Second, "message visibility and node lease, extended every third of it while a node runs")
		shutdownTimeout = flag.Duration("shutdown-timeout", 25*time.Second, "how long a stopping worker lets running nodes finish before it cancels them")
		latency         = flag.Duration("simulate-latency", 0, "how long each example node's simulated service call takes")
		logLevel        = flag.String("log-level", "info", "log level: debug, info, warn or error")
		reconcileEvery  = flag.Duration("reconcile-every", 0, "run the reconciler in this worker at this interval (0: off; run it in one or a few workers)")
		stallThreshold  = flag.Duration("stall-threshold", 10*time.Minute, "with -reconcile-every: how long a run may make no progress before its frontier is re-enqueued")
		retention       = flag.Duration("retention", 0, "delete each finished run's items this long after it finished, with DynamoDB TTL (0: keep them; at least 1h, and longer than the queue's message retention, 4 days with -setup)")
		healthAddr      = flag.String("health-addr", "", "serve GET /healthz on this address (e.g. :8080): 200 while the worker runs, 503 once it is shutting down (default: none)")
		probe           = flag.String("probe", "", "GET this URL and exit 0 if it answers 200, else 1 (a container's health check); does nothing else")
	)
	flag.Parse()
	if *probe != "" {
		return probeHealth(*probe)
	}
	if flag.NArg() > 0 || (*setup && *start) {
		fmt.Fprintln(os.Stderr, "usage: worker [-setup | -start [-input JSON] | flags]; see -help")
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "worker: -log-level: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	s := settingsFromEnv()

	// Clients from the standard AWS configuration chain.
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		logger.Error("worker: load AWS configuration", "err", err)
		return 1
	}
	if err := checkConfig(ctx, cfg); err != nil {
		logger.Error("worker: "+err.Error(), "err", errors.Unwrap(err))
		return 1
	}
	sqsClient := sqs.NewFromConfig(cfg)
	dbClient := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		// DynamoDB Local's error responses carry no CRC32 header; only a
		// loopback endpoint skips the check.
		if isLoopback(aws.ToString(o.BaseEndpoint)) {
			o.DisableValidateResponseChecksum = true
		}
	})

	if *setup {
		sctx, cancel := context.WithTimeout(ctx, setupTimeout)
		defer cancel()
		if err := setupResources(sctx, logger, sqsClient, dbClient, s); err != nil {
			logger.Error("worker: setup", "err", err)
			return 1
		}
		return 0
	}

	if s.queueURL == "" {
		out, err := sqsClient.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(s.queueName)})
		if err != nil {
			var missing *sqstypes.QueueDoesNotExist
			if errors.As(err, &missing) {
				logger.Error("worker: the queue does not exist (create it with the CloudFormation template, deploy/cloudformation.yaml, or for development with -setup)", "queue", s.queueName, "err", err)
			} else {
				logger.Error("worker: resolve the queue's URL with GetQueueUrl (or set SQSADAPTER_QUEUE_URL)", "queue", s.queueName, "err", err)
			}
			return 1
		}
		s.queueURL = aws.ToString(out.QueueUrl)
	}

	bp, err := sqsadapter.ParseBlueprint(orderBlueprint)
	if err != nil {
		logger.Error("worker: parse blueprint", "err", err)
		return 1
	}
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(sqsClient),
		sqsadapter.WithQueueURL(s.queueURL),
		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(dbClient, s.tables.Context, s.tables.Status)),
		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(dbClient, s.tables.Coordination)),
		sqsadapter.WithRegistry(registry(logger, *latency)),
		sqsadapter.WithBlueprints(bp),
		sqsadapter.WithConcurrency(*concurrency),
		sqsadapter.WithVisibilityTimeout(*visibility),
		sqsadapter.WithWorkerID(s.workerID),
		sqsadapter.WithLogger(logger),
		sqsadapter.WithTuning(sqsadapter.Tuning{Retention: *retention}),
	)
	if err != nil {
		logger.Error("worker: configure adapter", "err", err)
		return 1
	}

	if *start {
		return startAndWait(ctx, logger, a, *input, *runID, *wait)
	}
	var h *health
	if *healthAddr != "" {
		if h, err = serveHealth(logger, *healthAddr); err != nil {
			logger.Error("worker: health endpoint", "addr", *healthAddr, "err", err)
			return 1
		}
		defer h.close()
	}
	return work(logger, a, s, h, *concurrency, *shutdownTimeout, *reconcileEvery, *stallThreshold)
}

// health serves GET /healthz: 200 while the worker runs, 503 before it
// started and once it is shutting down, so that a platform stops sending
// it work and does not restart it while it drains.
type health struct {
	running atomic.Bool
	srv     *http.Server
}

func serveHealth(logger *slog.Logger, addr string) (*health, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &health{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !h.running.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"not running"}` + "\n"))
			return
		}
		_, _ = w.Write([]byte(`{"status":"running"}` + "\n"))
	})
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	logger.Info("worker: health endpoint", "addr", ln.Addr().String(), "path", "/healthz")
	return h, nil
}

func (h *health) set(running bool) {
	if h != nil {
		h.running.Store(running)
	}
}

func (h *health) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
}

// probeHealth is -probe: 0 if url answers 200 within 5s.
func probeHealth(url string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		return 1
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "probe:", resp.Status)
		return 1
	}
	return 0
}

// work runs the worker until SIGINT or SIGTERM, then shuts it down: it stops
// receiving at once and lets running nodes finish for shutdownTimeout; after
// that, or on a second signal, it cancels them (their messages become
// visible again, so another worker runs them).
func work(logger *slog.Logger, a *sqsadapter.SqsAdapter, s settings, h *health, concurrency int, shutdownTimeout, reconcileEvery, stallThreshold time.Duration) int {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()
	if reconcileEvery > 0 {
		// The reconciler re-enqueues the frontier of runs that made no
		// progress for stallThreshold (lost messages, dead-lettered jobs).
		rctx, stopReconciler := context.WithCancel(context.Background())
		reconcilerDone := make(chan struct{})
		go func() {
			defer close(reconcilerDone)
			_ = a.RunReconciler(rctx, reconcileEvery, stallThreshold)
		}()
		defer func() { stopReconciler(); <-reconcilerDone }()
	}
	h.set(true)
	logger.Info("worker: started", "worker_id", s.workerID, "queue_url", s.queueURL,
		"context_table", s.tables.Context, "status_table", s.tables.Status,
		"coordination_table", s.tables.Coordination, "concurrency", concurrency)

	select {
	case err := <-runErr: // Run only returns early on a misuse
		logger.Error("worker: stopped unexpectedly", "err", err)
		return 1
	case sig := <-sigs:
		h.set(false)
		logger.Info("worker: shutting down; running nodes may finish", "signal", sig.String(), "deadline", shutdownTimeout)
	}

	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			logger.Warn("worker: second signal; cancelling running nodes", "signal", sig.String())
			cancel()
		case <-sctx.Done():
		}
	}()
	began := time.Now()
	shutdownErr := a.Shutdown(sctx)
	err := <-runErr
	if shutdownErr != nil || err != nil {
		logger.Warn("worker: stopped; running nodes were cancelled and will be redelivered",
			"err", errors.Join(shutdownErr, err), "took", time.Since(began))
		return 1
	}
	logger.Info("worker: stopped cleanly", "took", time.Since(began))
	return 0
}

// startAndWait starts a run, prints its id, waits for it and prints its final
// status as JSON. It exits 0 only if the run completed.
func startAndWait(ctx context.Context, logger *slog.Logger, a *sqsadapter.SqsAdapter, input, runID string, wait time.Duration) int {
	var initial map[string]any
	if err := json.Unmarshal([]byte(input), &initial); err != nil {
		logger.Error("worker: -input must be a JSON object", "err", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()

	var opts []sqsadapter.RunOption
	if runID != "" {
		opts = append(opts, sqsadapter.WithRunID(runID))
	}
	id, err := a.StartRun(ctx, "order", initial, opts...)
	if err != nil {
		logger.Error("worker: start run", "err", err)
		return 1
	}
	fmt.Println(id)

	st, err := a.WaitForRun(ctx, id)
	if err != nil {
		logger.Error("worker: wait for run", "run_id", id, "err", err)
		return 1
	}
	out, err := json.MarshalIndent(st, "", "  ") // RunStatus has JSON tags
	if err != nil {
		logger.Error("worker: encode run status", "run_id", id, "err", err)
		return 1
	}
	fmt.Println(string(out))
	if st.Status != sqsadapter.StatusCompleted {
		return 1
	}
	return 0
}

// setupResources creates the dead-letter queue, the job queue with its
// redrive policy, and the tables. Every step is idempotent. It is meant for
// local development; in AWS, provision with CloudFormation (docs/aws.md).
func setupResources(ctx context.Context, logger *slog.Logger, sqsClient *sqs.Client, db *dynamodb.Client, s settings) error {
	dlqURL, err := ensureQueue(ctx, sqsClient, s.dlqName, map[string]string{
		string(sqstypes.QueueAttributeNameMessageRetentionPeriod): strconv.Itoa(dlqRetention),
	})
	if err != nil {
		return err
	}
	attrs, err := sqsClient.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(dlqURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return fmt.Errorf("read ARN of queue %s: %w", s.dlqName, err)
	}
	redrive, err := json.Marshal(map[string]any{
		"deadLetterTargetArn": attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)],
		"maxReceiveCount":     maxReceiveCount,
	})
	if err != nil {
		return err
	}
	queueURL, err := ensureQueue(ctx, sqsClient, s.queueName, map[string]string{
		string(sqstypes.QueueAttributeNameVisibilityTimeout):             strconv.Itoa(queueVisibilityTimeout),
		string(sqstypes.QueueAttributeNameReceiveMessageWaitTimeSeconds): strconv.Itoa(queueWaitTime),
		string(sqstypes.QueueAttributeNameMessageRetentionPeriod):        strconv.Itoa(queueRetention),
		string(sqstypes.QueueAttributeNameRedrivePolicy):                 string(redrive),
	})
	if err != nil {
		return err
	}
	logger.Info("worker: queues ready", "queue_url", queueURL, "dlq_url", dlqURL)

	if err := sqsadapter.CreateTables(ctx, db, s.tables); err != nil {
		return err
	}
	logger.Info("worker: tables ready", "context_table", s.tables.Context,
		"status_table", s.tables.Status, "coordination_table", s.tables.Coordination)
	return nil
}

// ensureQueue creates a standard queue with attrs, or, if it exists with
// other attributes, sets them. It returns the queue's URL.
func ensureQueue(ctx context.Context, client *sqs.Client, name string, attrs map[string]string) (string, error) {
	out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: attrs})
	if err == nil {
		return aws.ToString(out.QueueUrl), nil
	}
	var exists *sqstypes.QueueNameExists
	if !errors.As(err, &exists) {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	got, err := client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		return "", fmt.Errorf("look up queue %s: %w", name, err)
	}
	if _, err := client.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: got.QueueUrl, Attributes: attrs}); err != nil {
		return "", fmt.Errorf("update attributes of queue %s: %w", name, err)
	}
	return aws.ToString(got.QueueUrl), nil
}

// isLoopback reports whether an endpoint URL names this machine.
func isLoopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// The example nodes.

// Order is the run's initial "order" key.
type Order struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	Items    []Item `json:"items"`
}

// Item is one line of an order.
type Item struct {
	SKU   string  `json:"sku"`
	Qty   int     `json:"qty"`
	Price float64 `json:"price"`
}

// Reservation is the output of reserveStock.
type Reservation struct {
	Reserved bool     `json:"reserved"`
	Missing  []string `json:"missing,omitempty"`
}

// Screening is the output of screenFraud.
type Screening struct {
	Risk float64 `json:"risk"`
}

// Quote is the output of quoteTotal.
type Quote struct {
	Total    float64 `json:"total"`
	Currency string  `json:"currency"`
}

// Decision is the output of decide; its action routes the run.
type Decision struct {
	Decision string  `json:"decision"`
	Reason   string  `json:"reason,omitempty"`
	Total    float64 `json:"total"`
}

// services stands for the external systems the nodes call.
type services struct {
	log     *slog.Logger
	latency time.Duration
}

// call simulates a call to an external service that takes s.latency and
// honours ctx: a node must return promptly when its ctx is cancelled (a
// timeout, a lost message, a shutdown deadline).
func (s services) call(ctx context.Context, nc *sqsadapter.NodeContext) error {
	s.log.InfoContext(ctx, "order: step started", "run_id", nc.RunID, "node_id", nc.NodeID, "attempt", nc.Attempt)
	if s.latency <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// registry maps the blueprint's "uses" keys to the example nodes.
func registry(logger *slog.Logger, latency time.Duration) sqsadapter.NodeRegistry {
	svc := services{log: logger, latency: latency}
	// nodeContext is the NodeContext of a node written with Typed.
	nodeContext := func(ctx context.Context) *sqsadapter.NodeContext {
		nc, _ := sqsadapter.NodeContextFrom(ctx)
		return nc
	}
	return sqsadapter.NodeRegistry{
		// An invalid order fails the run at once: Permanent skips the retries.
		"validateOrder": sqsadapter.Typed(func(ctx context.Context, o Order) (Order, error) {
			if err := svc.call(ctx, nodeContext(ctx)); err != nil {
				return Order{}, err
			}
			if o.ID == "" || len(o.Items) == 0 {
				return Order{}, sqsadapter.Permanent(errors.New("an order needs an id and at least one item"))
			}
			for _, it := range o.Items {
				if it.SKU == "" || it.Qty < 1 || it.Price < 0 {
					return Order{}, sqsadapter.Permanent(fmt.Errorf("invalid item %+v", it))
				}
			}
			return o, nil
		}),
		// SKUs starting with "OOS-" are out of stock.
		"reserveStock": sqsadapter.Typed(func(ctx context.Context, o Order) (Reservation, error) {
			if err := svc.call(ctx, nodeContext(ctx)); err != nil {
				return Reservation{}, err
			}
			r := Reservation{Reserved: true}
			for _, it := range o.Items {
				if strings.HasPrefix(it.SKU, "OOS-") {
					r.Reserved = false
					r.Missing = append(r.Missing, it.SKU)
				}
			}
			return r, nil
		}),
		// Anonymous orders are high risk; large ones need a review.
		"screenFraud": sqsadapter.Typed(func(ctx context.Context, o Order) (Screening, error) {
			if err := svc.call(ctx, nodeContext(ctx)); err != nil {
				return Screening{}, err
			}
			switch {
			case o.Customer == "":
				return Screening{Risk: 0.95}, nil
			case orderTotal(o.Items) > 1000:
				return Screening{Risk: 0.6}, nil
			}
			return Screening{Risk: 0.1}, nil
		}),
		// Its input is the edge transform "input.items": the order's items.
		"quoteTotal": sqsadapter.Typed(func(ctx context.Context, items []Item) (Quote, error) {
			if err := svc.call(ctx, nodeContext(ctx)); err != nil {
				return Quote{}, err
			}
			return Quote{Total: orderTotal(items), Currency: "EUR"}, nil
		}),
		// The "all" join of the three checks; its action picks the branch.
		"decide": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			var in struct {
				Reserved bool    `json:"reserved"`
				Risk     float64 `json:"risk"`
				Total    float64 `json:"total"`
			}
			if err := nc.Decode(&in); err != nil {
				return sqsadapter.NodeResult{}, sqsadapter.Permanent(err)
			}
			if err := svc.call(ctx, nc); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			d := Decision{Total: in.Total}
			switch {
			case !in.Reserved:
				d.Decision, d.Reason = "cancel", "out of stock"
				return sqsadapter.NodeResult{Output: d}, nil // no action: the default edge
			case in.Risk >= 0.9:
				d.Decision, d.Reason = "cancel", "fraud risk"
				return sqsadapter.NodeResult{Output: d}, nil
			case in.Risk >= 0.5:
				d.Decision = "review"
				return sqsadapter.NodeResult{Output: d, Action: "review"}, nil
			}
			d.Decision = "approve"
			// Committed atomically with the output, only if the node commits.
			if err := nc.Set("approvedTotal", in.Total); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return sqsadapter.NodeResult{Output: d, Action: "approve"}, nil
		},
		// A side effect: the payment id derives from the idempotency key, so
		// a repeated attempt charges the same payment.
		"chargePayment": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			var d Decision
			if err := nc.Decode(&d); err != nil {
				return sqsadapter.NodeResult{}, sqsadapter.Permanent(err)
			}
			if err := svc.call(ctx, nc); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			paymentID := "pay_" + shortHash(nc.IdempotencyKey())
			if err := nc.Set("paymentId", paymentID); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return sqsadapter.NodeResult{Output: map[string]any{"paymentId": paymentID, "amount": d.Total}}, nil
		},
		"openReview": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if err := svc.call(ctx, nc); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return sqsadapter.NodeResult{Output: map[string]any{"ticket": "rev_" + shortHash(nc.IdempotencyKey())}}, nil
		},
		"cancelOrder": sqsadapter.Typed(func(ctx context.Context, d Decision) (map[string]any, error) {
			if err := svc.call(ctx, nodeContext(ctx)); err != nil {
				return nil, err
			}
			return map[string]any{"cancelled": true, "reason": d.Reason}, nil
		}),
		// The "any" join: its input is {predecessorId: output} of the branch
		// that ran.
		"notifyCustomer": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if err := svc.call(ctx, nc); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			about := ""
			if in, ok := nc.Input.(map[string]any); ok {
				for k := range in {
					about = k
				}
			}
			return sqsadapter.NodeResult{Output: map[string]any{"sent": true, "about": about}}, nil
		},
	}
}

// orderTotal sums the items, rounded to cents.
func orderTotal(items []Item) float64 {
	total := 0.0
	for _, it := range items {
		total += float64(it.Qty) * it.Price
	}
	return math.Round(total*100) / 100
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}
