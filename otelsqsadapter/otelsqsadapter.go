// Package otelsqsadapter instruments an sqsadapter.SqsAdapter with
// OpenTelemetry: a span per job handling and per node attempt, one trace per
// run across processes, and metrics.
//
//	tel, err := otelsqsadapter.New(
//		otelsqsadapter.WithTracerProvider(tp),
//		otelsqsadapter.WithMeterProvider(mp),
//	)
//	cfg.APIOptions = append(cfg.APIOptions, tel.AWSMiddleware) // AWS requests by operation
//	a, err := sqsadapter.NewSqsAdapter(tel.Option(), ...)
//
// Nothing is global: the providers are those passed (no provider: that
// signal is off), the trace context travels in W3C form ("traceparent" and
// "tracestate" message attributes on every job message, so each worker's
// receive asks for them), and an adapter without tel.Option() sends and asks
// for no attribute at all.
//
// # Traces
//
// StartRun, ResumeRun, CancelRun, DeliverWebhook and DeleteRun start a span
// ("sqsadapter.StartRun", …) whose context the jobs they send carry. Each
// handling of a job is a consumer span "job <nodeId>" whose parent is the
// span that sent or chained the job, on whatever worker; each attempt of a
// node function is a child span "attempt <nodeId>", with the node
// function's ctx under it, so the spans a node makes join the run's trace.
// A run is therefore one trace, from StartRun through every worker that
// handled its jobs. Jobs sent by the reconciler, which runs outside any
// run's handling, start traces of their own.
//
// Metrics name blueprint nodes: a batch's items count under their scatter
// node (the job span has sqsadapter.item), a loop's passes under their node
// (the span has sqsadapter.iteration).
//
// Span attributes: sqsadapter.run.id, sqsadapter.blueprint.id,
// sqsadapter.blueprint.version, sqsadapter.node.id, sqsadapter.iteration
// and sqsadapter.item (loops and batches, when set), sqsadapter.attempt,
// sqsadapter.outcome ("done", "retry" or "abandon"), messaging.system
// ("aws_sqs"), messaging.message.id and sqsadapter.receive_count.
//
// # Metrics
//
//   - sqsadapter.jobs (counter): job handlings, by sqsadapter.outcome.
//   - sqsadapter.nodes.executed (counter): node attempts that returned
//     without error, by blueprint and node.
//   - sqsadapter.nodes.failed (counter): nodes this worker marked failed
//     for good, which fails their run (a node whose fallback runs is not
//     failed), by blueprint and node.
//   - sqsadapter.attempt.duration (histogram, s): node attempts, by
//     blueprint, node and sqsadapter.attempt.outcome ("ok" or "error").
//   - sqsadapter.queue.lag (histogram, s): from when a message was due (its
//     sending, or the end of a sleep timer's delay) to its handling, on its
//     first delivery, by blueprint.
//   - sqsadapter.aws.requests (counter): AWS API requests sent through
//     clients carrying AWSMiddleware, each retry included, by rpc.service,
//     rpc.method and error (true when the attempt failed).
//
// Counts follow the protocol's at-least-once handling: a job redelivered
// after a crash is handled, and counted, again.
package otelsqsadapter

import (
	"context"
	"errors"
	"sync"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/obs"
)

// scope is the instrumentation scope of the tracer and the meter.
const scope = "github.com/flowcraft/sqsadapter/otelsqsadapter"

// Attribute keys.
const (
	keyRunID          = attribute.Key("sqsadapter.run.id")
	keyBlueprint      = attribute.Key("sqsadapter.blueprint.id")
	keyVersion        = attribute.Key("sqsadapter.blueprint.version")
	keyNode           = attribute.Key("sqsadapter.node.id")
	keyIteration      = attribute.Key("sqsadapter.iteration")
	keyItem           = attribute.Key("sqsadapter.item")
	keyAttempt        = attribute.Key("sqsadapter.attempt")
	keyOutcome        = attribute.Key("sqsadapter.outcome")
	keyAttemptOutcome = attribute.Key("sqsadapter.attempt.outcome")
	keyReceives       = attribute.Key("sqsadapter.receive_count")
	keySystem         = attribute.Key("messaging.system")
	keyMessageID      = attribute.Key("messaging.message.id")
	keyService        = attribute.Key("rpc.service")
	keyMethod         = attribute.Key("rpc.method")
	keyError          = attribute.Key("error")
)

// Option configures New.
type Option func(*config)

type config struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// WithTracerProvider makes spans with tp (default: none).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider records metrics with mp (default: none).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// Telemetry instruments adapters (Option) and AWS SDK clients
// (AWSMiddleware). One Telemetry may serve several adapters and clients; it
// is safe for concurrent use.
type Telemetry struct {
	tracer trace.Tracer
	prop   propagation.TraceContext

	jobs     metric.Int64Counter
	executed metric.Int64Counter
	failed   metric.Int64Counter
	duration metric.Float64Histogram
	lag      metric.Float64Histogram
	requests metric.Int64Counter

	// sets caches the attribute sets of measures by what they hold, so
	// that a measure allocates none (their number follows the blueprints'
	// nodes, not the runs).
	sets sync.Map // setKey -> metric.MeasurementOption
}

// setKey names an attribute set of a measure; empty fields are absent.
type setKey struct {
	blueprint, node, outcome, attemptOutcome string
}

// attrs returns the measurement option of k's attribute set.
func (t *Telemetry) attrs(k setKey) metric.MeasurementOption {
	if o, ok := t.sets.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	var kv []attribute.KeyValue
	if k.blueprint != "" {
		kv = append(kv, keyBlueprint.String(k.blueprint))
	}
	if k.node != "" {
		kv = append(kv, keyNode.String(k.node))
	}
	if k.outcome != "" {
		kv = append(kv, keyOutcome.String(k.outcome))
	}
	if k.attemptOutcome != "" {
		kv = append(kv, keyAttemptOutcome.String(k.attemptOutcome))
	}
	o, _ := t.sets.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(kv...)))
	return o.(metric.MeasurementOption)
}

// New makes a Telemetry from the providers given; without any it is valid
// and records nothing.
func New(opts ...Option) (*Telemetry, error) {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.tp == nil {
		c.tp = tracenoop.NewTracerProvider()
	}
	if c.mp == nil {
		c.mp = metricnoop.NewMeterProvider()
	}
	t := &Telemetry{tracer: c.tp.Tracer(scope)}
	m := c.mp.Meter(scope)
	var errs [6]error
	t.jobs, errs[0] = m.Int64Counter("sqsadapter.jobs", metric.WithUnit("{job}"),
		metric.WithDescription("Job handlings, by outcome."))
	t.executed, errs[1] = m.Int64Counter("sqsadapter.nodes.executed", metric.WithUnit("{node}"),
		metric.WithDescription("Node attempts that returned without error."))
	t.failed, errs[2] = m.Int64Counter("sqsadapter.nodes.failed", metric.WithUnit("{node}"),
		metric.WithDescription("Nodes marked failed for good."))
	t.duration, errs[3] = m.Float64Histogram("sqsadapter.attempt.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of node attempts."))
	t.lag, errs[4] = m.Float64Histogram("sqsadapter.queue.lag", metric.WithUnit("s"),
		metric.WithDescription("Time from a job message's sending to its handling."))
	t.requests, errs[5] = m.Int64Counter("sqsadapter.aws.requests", metric.WithUnit("{request}"),
		metric.WithDescription("AWS API requests, each retry included."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return t, nil
}

// Option is the sqsadapter.Option that instruments an adapter with t.
func (t *Telemetry) Option() sqsadapter.Option {
	return obs.Install(hooks{t}).(sqsadapter.Option)
}

// AWSMiddleware counts the requests of an AWS SDK client by service and
// operation (sqsadapter.aws.requests). Append it to aws.Config.APIOptions,
// or to a client's Options.APIOptions.
func (t *Telemetry) AWSMiddleware(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("sqsadapter.otel.requests",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleFinalize(ctx, in)
			t.requests.Add(ctx, 1, metric.WithAttributes(
				keyService.String(awsmiddleware.GetServiceID(ctx)),
				keyMethod.String(awsmiddleware.GetOperationName(ctx)),
				keyError.Bool(err != nil)))
			return out, md, err
		}), middleware.After)
}

// hooks is what the engine calls.
type hooks struct{ t *Telemetry }

func (h hooks) Inject(ctx context.Context) obs.Carrier {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := obs.Carrier{}
	h.t.prop.Inject(ctx, propagation.MapCarrier(c))
	return c
}

func (h hooks) Operation(ctx context.Context, name, blueprintID string) (context.Context, func(string, error)) {
	kind := trace.SpanKindClient
	if name == "StartRun" {
		kind = trace.SpanKindProducer
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(kind)}
	if blueprintID != "" {
		opts = append(opts, trace.WithAttributes(keyBlueprint.String(blueprintID)))
	}
	ctx, span := h.t.tracer.Start(ctx, "sqsadapter."+name, opts...)
	return ctx, func(runID string, err error) {
		if runID != "" {
			span.SetAttributes(keyRunID.String(runID))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

func (h hooks) Job(ctx context.Context, j *obs.Job) (context.Context, obs.Span) {
	now := time.Now()
	if j.Parent != nil {
		ctx = h.t.prop.Extract(ctx, propagation.MapCarrier(j.Parent))
	}
	attrs := []attribute.KeyValue{
		keyRunID.String(j.RunID), keyBlueprint.String(j.BlueprintID), keyNode.String(j.NodeID),
		keySystem.String("aws_sqs"),
	}
	if j.BlueprintVersion != "" {
		attrs = append(attrs, keyVersion.String(j.BlueprintVersion))
	}
	if j.Iter > 0 {
		attrs = append(attrs, keyIteration.Int(j.Iter))
	}
	if j.Item > 0 {
		attrs = append(attrs, keyItem.Int(j.Item))
	}
	if j.MessageID != "" {
		attrs = append(attrs, keyMessageID.String(j.MessageID), keyReceives.Int(j.Receives))
	}
	ctx, span := h.t.tracer.Start(ctx, "job "+j.NodeID, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	if !j.DueAt.IsZero() {
		h.t.lag.Record(ctx, max(now.Sub(j.DueAt), 0).Seconds(), h.t.attrs(setKey{blueprint: j.BlueprintID}))
	}
	return ctx, &jobSpan{t: h.t, span: span, blueprint: j.BlueprintID}
}

// jobSpan is one handling of a job.
type jobSpan struct {
	t         *Telemetry
	span      trace.Span
	blueprint string
}

func (s *jobSpan) Attempt(ctx context.Context, node string, attempt int) (context.Context, func(error)) {
	start := time.Now()
	ctx, span := s.t.tracer.Start(ctx, "attempt "+node, trace.WithAttributes(keyNode.String(node), keyAttempt.Int(attempt)))
	return ctx, func(err error) {
		outcome := "ok"
		if err != nil {
			outcome = "error"
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			s.t.executed.Add(ctx, 1, s.t.attrs(setKey{blueprint: s.blueprint, node: node}))
		}
		s.t.duration.Record(ctx, time.Since(start).Seconds(), s.t.attrs(setKey{blueprint: s.blueprint, node: node, attemptOutcome: outcome}))
		span.End()
	}
}

func (s *jobSpan) Failed(node, reason string) {
	s.span.AddEvent("node failed", trace.WithAttributes(keyNode.String(node), attribute.String("reason", reason)))
	s.t.failed.Add(context.Background(), 1, s.t.attrs(setKey{blueprint: s.blueprint, node: node}))
}

func (s *jobSpan) End(outcome string, err error) {
	s.span.SetAttributes(keyOutcome.String(outcome))
	if err != nil && outcome != "done" {
		s.span.RecordError(err)
		s.span.SetStatus(codes.Error, err.Error())
	}
	s.t.jobs.Add(context.Background(), 1, s.t.attrs(setKey{outcome: outcome}))
	s.span.End()
}
