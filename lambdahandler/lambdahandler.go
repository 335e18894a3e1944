// Package lambdahandler runs sqsadapter jobs in AWS Lambda: New returns a
// handler for Lambda's SQS event source that handles each message of a
// batch with SqsAdapter.HandleJob and reports the messages not done as
// batch item failures, so that Lambda deletes only the others.
//
//	a, err := sqsadapter.NewSqsAdapter(...) // as for a worker, without Run
//	lambda.Start(lambdahandler.New(a))
//
// The event source mapping must have ReportBatchItemFailures in its
// FunctionResponseTypes: without it Lambda retries the whole batch when
// any message fails (harmless, as every job is idempotent, but wasteful).
//
// There is no heartbeat on the message: Lambda owns it, and keeps it
// invisible for the queue's visibility timeout from the moment it was
// received. Set the function's timeout below that visibility timeout (AWS
// asks for a visibility timeout of at least six times the function's
// timeout), and pass the queue's visibility timeout to
// sqsadapter.WithVisibilityTimeout: it is also the lease of a running node,
// which the adapter extends while the node runs, so a node may run up to the
// function's timeout. A message that is not done comes back after the
// visibility timeout, and the queue's redrive policy moves it to the
// dead-letter queue after maxReceiveCount receives.
package lambdahandler

import (
	"context"
	"log/slog"
	"sync"

	"github.com/aws/aws-lambda-go/events"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/obs"
)

// Handler is the function New returns, the signature lambda.Start takes
// for an SQS event source with partial batch responses.
type Handler func(ctx context.Context, event events.SQSEvent) (events.SQSEventResponse, error)

// Option configures New.
type Option func(*config)

type config struct {
	concurrency int
	logger      *slog.Logger
}

// WithConcurrency sets how many messages of a batch are handled at once
// (default 10, the largest batch of a standard queue's event source
// without a batching window; at least 1).
func WithConcurrency(n int) Option {
	return func(c *config) { c.concurrency = max(n, 1) }
}

// WithLogger sets the logger for messages that are not done (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// New returns a handler that runs each message of an SQS event as a job
// of a. A message whose body is not a job, and one whose job is not done
// (HandleJob returned an error: a store failing, a blueprint this function
// lacks, the function's time running out), is reported as a batch item
// failure; the others are done, and Lambda deletes them. The handler
// itself returns no error, so that Lambda applies the response.
func New(a *sqsadapter.SqsAdapter, opts ...Option) Handler {
	c := config{concurrency: 10, logger: slog.Default()}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return func(ctx context.Context, event events.SQSEvent) (events.SQSEventResponse, error) {
		failed := make([]bool, len(event.Records))
		slots := make(chan struct{}, c.concurrency)
		var wg sync.WaitGroup
		for i, m := range event.Records {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				if err := handle(ctx, a, m); err != nil {
					failed[i] = true
					c.logger.WarnContext(ctx, "sqsadapter: message not done; reported as a batch item failure", "msg_id", m.MessageId, "err", err)
				}
			})
		}
		wg.Wait()
		var resp events.SQSEventResponse
		for i, f := range failed {
			if f {
				resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: event.Records[i].MessageId})
			}
		}
		return resp, nil
	}
}

// handle runs one message's job; nil when it is done. HandleJob recovers
// a panic of the job's handling itself.
func handle(ctx context.Context, a *sqsadapter.SqsAdapter, m events.SQSMessage) error {
	var job sqsadapter.Job
	if err := job.UnmarshalJSON([]byte(m.Body)); err != nil {
		return err // left for the redrive policy: nothing names a run to fail
	}
	return a.HandleJob(obs.WithMessage(ctx, message(m)), job)
}

// message is what the adapter's telemetry learns of an event's message:
// its trace context (message attributes), when it was sent, its id and
// receive count. The adapter reads it only when telemetry is installed.
func message(m events.SQSMessage) obs.Message {
	return obs.MessageOf(m.MessageId, func(name string) (string, bool) {
		v, ok := m.MessageAttributes[name]
		if !ok || v.StringValue == nil {
			return "", false
		}
		return *v.StringValue, true
	}, m.Attributes)
}
