// Command lambda is an sqsadapter worker for AWS Lambda: the function
// that an SQS event source mapping calls with batches of job messages.
// Copy it and replace the example node and blueprint with your own;
// template.yaml deploys it (sam deploy) beside the tables and the queue.
//
// It reads the AWS settings the standard way (config.LoadDefaultConfig)
// and these variables:
//
//	SQSADAPTER_QUEUE_URL           the job queue's URL (required): successors' jobs are sent to it
//	SQSADAPTER_CONTEXT_TABLE       run contexts and node records (default flowcraft-context)
//	SQSADAPTER_STATUS_TABLE        run records (default flowcraft-status)
//	SQSADAPTER_COORDINATION_TABLE  join records (default flowcraft-coordination)
//	SQSADAPTER_VISIBILITY_TIMEOUT  the queue's visibility timeout, e.g. 3m (default 3m): the
//	                               longest a node's lease lasts between extensions
//
// The adapter is built once per execution environment, outside the
// handler, and reused by every invocation. Messages the function does not
// finish are reported as batch item failures (lambdahandler), so the event
// source mapping needs FunctionResponseTypes: ReportBatchItemFailures.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/lambdahandler"
)

// greeting is the example blueprint: greet, then shout.
const greeting = `{"id": "greeting", "nodes": [
  {"id": "greet", "uses": "greet"},
  {"id": "shout", "uses": "shout"}],
 "edges": [{"source": "greet", "target": "shout"}]}`

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	a, err := newAdapter(context.Background(), logger)
	if err != nil {
		logger.Error("sqsadapter lambda: configuration", "err", err)
		os.Exit(1)
	}
	lambda.Start(lambdahandler.New(a, lambdahandler.WithLogger(logger)))
}

func newAdapter(ctx context.Context, logger *slog.Logger) (*sqsadapter.SqsAdapter, error) {
	queueURL := os.Getenv("SQSADAPTER_QUEUE_URL")
	if queueURL == "" {
		return nil, fmt.Errorf("SQSADAPTER_QUEUE_URL is not set")
	}
	visibility := 3 * time.Minute
	if v := os.Getenv("SQSADAPTER_VISIBILITY_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("SQSADAPTER_VISIBILITY_TIMEOUT: %w", err)
		}
		visibility = d
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	db := dynamodb.NewFromConfig(cfg)
	bp, err := sqsadapter.ParseBlueprint([]byte(greeting))
	if err != nil {
		return nil, err
	}
	return sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(sqs.NewFromConfig(cfg)),
		sqsadapter.WithQueueURL(queueURL),
		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(db, envOr("SQSADAPTER_CONTEXT_TABLE", "flowcraft-context"), envOr("SQSADAPTER_STATUS_TABLE", "flowcraft-status"))),
		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(db, envOr("SQSADAPTER_COORDINATION_TABLE", "flowcraft-coordination"))),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"greet": greet, "shout": shout}),
		sqsadapter.WithBlueprints(bp),
		sqsadapter.WithVisibilityTimeout(visibility),
		sqsadapter.WithLogger(logger),
	)
}

func greet(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	name, _ := nc.Input.(string)
	if name == "" {
		name = "world"
	}
	return sqsadapter.NodeResult{Output: "hello, " + name}, nil
}

func shout(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	s, _ := nc.Input.(string)
	return sqsadapter.NodeResult{Output: s + "!"}, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
