package sqsadapter

import (
	"context"
	"errors"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/obs"
)

// This file connects the engine to its instrumentation (package
// otelsqsadapter builds the hooks). Without hooks none of it runs: no
// message attribute is sent or asked for, and nothing is allocated.

func init() {
	obs.Install = func(h obs.Hooks) any {
		return Option(func(cfg *config) error {
			if h == nil {
				return errors.New("sqsadapter: nil telemetry hooks")
			}
			cfg.hooks = h
			return nil
		})
	}
}

// messageAttributes are the message attributes of a job's trace context.
func (j *Job) messageAttributes() map[string]types.MessageAttributeValue {
	if len(j.trace) == 0 {
		return nil
	}
	attrs := make(map[string]types.MessageAttributeValue, len(j.trace))
	for k, v := range j.trace {
		attrs[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	return attrs
}

// attributesSize is what SQS counts of a message's attributes towards its
// size limit: each name, data type and value.
func attributesSize(attrs map[string]types.MessageAttributeValue) int {
	n := 0
	for k, v := range attrs {
		n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	return n
}

// fitAttributes drops attrs when they would take a body of bodySize bytes
// over SQS's message size: the trace context is never worth a job that
// cannot be sent, and the protocol does not rely on it.
func fitAttributes(attrs map[string]types.MessageAttributeValue, bodySize int) map[string]types.MessageAttributeValue {
	if bodySize+attributesSize(attrs) > limits.MessageBytes {
		return nil
	}
	return attrs
}

// traced sets the trace context of ctx on the jobs that carry none, so
// that their handlings continue the trace.
func (a *SqsAdapter) traced(ctx context.Context, jobs []Job) {
	c := a.cfg.hooks.Inject(ctx)
	if c == nil {
		return
	}
	for i := range jobs {
		if jobs[i].trace == nil {
			jobs[i].trace = c
		}
	}
}

// messageOf is what the hooks learn of a received message: its trace
// context, when it was sent, its id and receive count.
func messageOf(m *types.Message) obs.Message {
	return obs.MessageOf(aws.ToString(m.MessageId), func(name string) (string, bool) {
		v, ok := m.MessageAttributes[name]
		return aws.ToString(v.StringValue), ok && v.StringValue != nil
	}, m.Attributes)
}

// startSpan starts the span of a handling of job, the depth-th job of its
// message's chain (0: the message's own). msg is what is known of the
// message (nil: none).
func (a *SqsAdapter) startSpan(ctx context.Context, job *Job, depth int, msg *obs.Message) (context.Context, obs.Span) {
	j := &obs.Job{
		RunID: job.RunID, BlueprintID: job.BlueprintID, BlueprintVersion: job.BlueprintVersion, NodeID: job.NodeID,
		Iter: job.Iter, Item: job.Item, Parent: job.trace,
	}
	if msg != nil && depth == 0 {
		j.MessageID, j.Receives = msg.MessageID, msg.Receives
		if !msg.SentAt.IsZero() && msg.Receives <= 1 {
			// Lag is measured on first deliveries from when the message was
			// due: a sleep's timer is delayed on purpose, up to SQS's 15
			// minutes a message.
			j.DueAt = msg.SentAt
			if job.WakeAt != 0 {
				due := time.UnixMilli(job.WakeAt)
				if last := msg.SentAt.Add(maxDelay); due.After(last) {
					due = last
				}
				if due.After(j.DueAt) {
					j.DueAt = due
				}
			}
		}
	}
	return a.cfg.hooks.Job(ctx, j)
}

// blueprintNode is the blueprint node that attempt of n runs, for
// telemetry: n's own for a fallback, the scatter for a batch's item, and
// the node without its pass for a loop's: metrics are by blueprint node,
// whatever the items or passes.
func (x *jobRun) blueprintNode(n *planNode) string {
	if x.job.Item > 0 {
		return x.n.def.ID
	}
	return n.def.ID
}

// outcomeName names an outcome for the hooks.
func (o outcome) name() string {
	switch o.kind {
	case outcomeDone:
		return "done"
	case outcomeRetry:
		return "retry"
	}
	return "abandon"
}

// operation starts the span of a client call when hooks are installed;
// the returned end is never nil.
func (a *SqsAdapter) operation(ctx context.Context, name, blueprintID string) (context.Context, func(runID string, err error)) {
	if a.cfg.hooks == nil {
		return ctx, func(string, error) {}
	}
	return a.cfg.hooks.Operation(ctx, name, blueprintID)
}
