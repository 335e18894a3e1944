// Package obs is the seam between the engine and its instrumentation
// (package otelsqsadapter): the engine calls Hooks at the points a trace or
// a metric needs, and carries trace context between processes in job
// messages. With no Hooks installed the engine calls nothing.
package obs

import (
	"context"
	"strconv"
	"time"
)

// Carrier is the trace context a job message carries, as its message
// attributes: W3C "traceparent" and, when set, "tracestate". It is read
// only once made.
type Carrier map[string]string

// Fields are the message attributes a Carrier may hold.
var Fields = []string{"traceparent", "tracestate"}

// MessageOf is what a message tells the hooks: id is its id, attr(name)
// its string message attribute name, and system its system attributes
// (SentTimestamp, ApproximateReceiveCount), as ReceiveMessage and Lambda's
// SQS events give them.
func MessageOf(id string, attr func(name string) (string, bool), system map[string]string) Message {
	m := Message{MessageID: id}
	for _, k := range Fields {
		if v, ok := attr(k); ok {
			if m.Carrier == nil {
				m.Carrier = Carrier{}
			}
			m.Carrier[k] = v
		}
	}
	if ms, err := strconv.ParseInt(system["SentTimestamp"], 10, 64); err == nil {
		m.SentAt = time.UnixMilli(ms)
	}
	m.Receives, _ = strconv.Atoi(system["ApproximateReceiveCount"])
	return m
}

// Job names the job a span or a measure is about.
type Job struct {
	RunID, BlueprintID, BlueprintVersion, NodeID string
	Iter, Item                                   int
	// Parent is the trace context the job came with: its message's, or
	// the job's that chained it; nil when it came with none.
	Parent Carrier
	// DueAt is when its message was due for delivery: when it was sent,
	// or the end of the delay it was sent with (a sleep's timer). Zero
	// when unknown, and for a job no message carried (a chained job), or
	// a message received again (its lag is a retry's, not the queue's).
	DueAt time.Time
	// MessageID is its message's id, empty without a message.
	MessageID string
	// Receives is its message's receive count (0 without a message).
	Receives int
}

// Hooks are called by the engine. They must be safe for concurrent use and
// must not block.
type Hooks interface {
	// Job starts the span of one handling of a job and returns the ctx
	// the handling runs in, with a Span to report to.
	Job(ctx context.Context, j *Job) (context.Context, Span)
	// Operation starts the span of a client call (StartRun, ResumeRun,
	// CancelRun, DeliverWebhook, DeleteRun) and returns its ctx and how to
	// end it.
	Operation(ctx context.Context, name, blueprintID string) (context.Context, func(runID string, err error))
	// Inject returns the trace context of ctx for the jobs sent under it;
	// nil when ctx has none.
	Inject(ctx context.Context) Carrier
}

// Span is one handling of a job.
type Span interface {
	// Attempt starts one attempt of the node function (node is the node
	// run: the job's node or its fallback) and returns its ctx and how to
	// end it.
	Attempt(ctx context.Context, node string, attempt int) (context.Context, func(err error))
	// Failed reports that the handling marked node failed for good.
	Failed(node, reason string)
	// End ends the handling with its outcome ("done", "retry" or
	// "abandon") and the error that explains it, if any.
	End(outcome string, err error)
}

// Install makes the sqsadapter.Option that installs h; package sqsadapter
// sets it when it is initialized, so that the instrumentation builds options
// without a name in the public API of the package. The value is an
// sqsadapter.Option.
var Install func(h Hooks) any

// message is the key of the message details a ctx carries into HandleJob.
type message struct{}

// Message is what a caller of HandleJob knows of the job's SQS message.
type Message struct {
	Carrier   Carrier
	SentAt    time.Time
	MessageID string
	Receives  int
}

// WithMessage returns ctx carrying m for HandleJob (package lambdahandler
// passes the event's message details this way).
func WithMessage(ctx context.Context, m Message) context.Context {
	return context.WithValue(ctx, message{}, m)
}

// MessageFrom returns the message details ctx carries.
func MessageFrom(ctx context.Context) (Message, bool) {
	m, ok := ctx.Value(message{}).(Message)
	return m, ok
}
