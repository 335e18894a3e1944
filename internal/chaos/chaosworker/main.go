// Command chaosworker is the worker process of the chaos harness
// (internal/chaos): a production-shaped sqsadapter worker, like
// examples/worker, that runs the chaos blueprint.
//
// It reads the AWS settings the standard way (config.LoadDefaultConfig:
// credentials, AWS_REGION, AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL_DYNAMODB,
// AWS_MAX_ATTEMPTS…), the queue and tables from the environment, logs JSON
// to stderr, and shuts down gracefully on SIGINT or SIGTERM.
//
// Environment:
//
//	SQSADAPTER_QUEUE_URL           the job queue's URL (required)
//	SQSADAPTER_CONTEXT_TABLE       run contexts and node records (default flowcraft-context)
//	SQSADAPTER_STATUS_TABLE        run records (default flowcraft-status)
//	SQSADAPTER_COORDINATION_TABLE  join records (default flowcraft-coordination)
//	SQSADAPTER_WORKER_ID           this worker's name in leases and logs (default <hostname>-<pid>)
//
// Exit status: 0 after a clean shutdown; 1 on an error, or a shutdown whose
// deadline cancelled running nodes; 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/chaos"
	"github.com/flowcraft/sqsadapter/otelsqsadapter"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		concurrency     = flag.Int("concurrency", 8, "how many jobs the worker runs at once")
		visibility      = flag.Duration("visibility-timeout", 3*time.Second, "message visibility and node lease, extended every third of it while a node runs")
		slow            = flag.Duration("slow", 0, "how long the slow node sleeps (default 2.5 visibility timeouts)")
		shutdownTimeout = flag.Duration("shutdown-timeout", 5*time.Second, "how long a stopping worker lets running nodes finish before it cancels them")
		logLevel        = flag.String("log-level", "warn", "log level: debug, info, warn or error")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: chaosworker [flags]; see -help")
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "chaosworker: -log-level: %v\n", err)
		return 2
	}
	if *slow == 0 {
		*slow = *visibility * 5 / 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	queueURL := os.Getenv("SQSADAPTER_QUEUE_URL")
	if queueURL == "" {
		logger.Error("chaosworker: SQSADAPTER_QUEUE_URL is required")
		return 2
	}
	tables := sqsadapter.TableNames{
		Context:      envOr("SQSADAPTER_CONTEXT_TABLE", "flowcraft-context"),
		Status:       envOr("SQSADAPTER_STATUS_TABLE", "flowcraft-status"),
		Coordination: envOr("SQSADAPTER_COORDINATION_TABLE", "flowcraft-coordination"),
	}
	var retention time.Duration // Tuning.Retention (SQSADAPTER_RETENTION; default none)
	if v := os.Getenv("SQSADAPTER_RETENTION"); v != "" {
		var err error
		if retention, err = time.ParseDuration(v); err != nil {
			logger.Error("chaosworker: SQSADAPTER_RETENTION", "err", err)
			return 2
		}
	}
	host, _ := os.Hostname()
	workerID := envOr("SQSADAPTER_WORKER_ID", fmt.Sprintf("%s-%d", host, os.Getpid()))

	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		logger.Error("chaosworker: load AWS configuration", "err", err)
		return 1
	}
	// Telemetry is on, recorded and never exported: its message attributes
	// ride through the faults and the kills like the jobs they go with.
	tel, err := otelsqsadapter.New(
		otelsqsadapter.WithTracerProvider(sdktrace.NewTracerProvider()),
		otelsqsadapter.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))))
	if err != nil {
		logger.Error("chaosworker: telemetry", "err", err)
		return 1
	}
	cfg.APIOptions = append(cfg.APIOptions, tel.AWSMiddleware)
	sqsClient := sqs.NewFromConfig(cfg)
	dbClient := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		// DynamoDB Local's error responses carry no CRC32 header; only a
		// loopback endpoint skips the check.
		if isLoopback(aws.ToString(o.BaseEndpoint)) {
			o.DisableValidateResponseChecksum = true
		}
	})

	all, err := chaos.Blueprints()
	if err != nil {
		logger.Error("chaosworker: blueprint", "err", err)
		return 1
	}
	bp := all[0]
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(sqsClient),
		sqsadapter.WithQueueURL(queueURL),
		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(dbClient, tables.Context, tables.Status)),
		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(dbClient, tables.Coordination)),
		sqsadapter.WithRegistry(chaos.Registry(bp, *slow)),
		sqsadapter.WithBlueprints(all...),
		sqsadapter.WithConcurrency(*concurrency),
		sqsadapter.WithVisibilityTimeout(*visibility),
		sqsadapter.WithWorkerID(workerID),
		sqsadapter.WithLogger(logger),
		tel.Option(),
		sqsadapter.WithTuning(sqsadapter.Tuning{Retention: retention}),
	)
	if err != nil {
		logger.Error("chaosworker: configure adapter", "err", err)
		return 1
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(context.Background()) }()
	logger.Info("chaosworker: started", "worker_id", workerID, "queue_url", queueURL, "concurrency", *concurrency,
		"visibility_timeout", *visibility, "slow", *slow)

	select {
	case err := <-runErr: // Run only returns early on a misuse
		logger.Error("chaosworker: stopped unexpectedly", "err", err)
		return 1
	case sig := <-sigs:
		logger.Info("chaosworker: shutting down", "signal", sig.String(), "deadline", *shutdownTimeout)
	}
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-sctx.Done():
		}
	}()
	shutdownErr := a.Shutdown(sctx)
	if err := errors.Join(shutdownErr, <-runErr); err != nil {
		logger.Warn("chaosworker: stopped; running nodes were cancelled and will be redelivered", "err", err)
		return 1
	}
	logger.Info("chaosworker: stopped cleanly")
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
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
