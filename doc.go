// Package sqsadapter runs Flowcraft workflow blueprints — JSON DAGs of
// nodes joined by edges — distributed over AWS: SQS carries one job per
// node, DynamoDB holds each run's context, node records and status, and
// coordination records (fan-in joins). Any number of worker processes share
// one queue and three tables.
//
// # Using it
//
// A service registers node functions in a NodeRegistry, parses blueprints
// with ParseBlueprint, and builds an SqsAdapter:
//
//	a, err := sqsadapter.NewSqsAdapter(
//		sqsadapter.WithSQSClient(sqs.NewFromConfig(cfg)),
//		sqsadapter.WithQueueURL(queueURL),
//		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(db, "ctx", "status")),
//		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(db, "coord")),
//		sqsadapter.WithRegistry(registry),
//		sqsadapter.WithBlueprints(bp),
//	)
//	go a.Run(ctx)                                   // the worker
//	id, err := a.StartRun(ctx, "order", initial)    // a client
//	st, err := a.WaitForRun(ctx, id)
//
// The package sqsadaptertest provides in-memory SQS, ContextStore and
// CoordinationStore implementations for tests and for embedding.
// Package otelsqsadapter adds OpenTelemetry traces (one per run, across
// workers) and metrics; package lambdahandler runs jobs in AWS Lambda.
//
// # Lifecycle
//
// NewSqsAdapter validates everything and starts nothing. Run blocks,
// receiving jobs until its ctx is done or Shutdown is called, then drains.
// Shutdown stops receiving at once, lets running nodes finish, makes jobs
// that wait for a retry visible again, and on its ctx's expiry cancels the
// running nodes. HandleJob runs a single job without polling (AWS Lambda).
// All methods are safe for concurrent use.
//
// A finished run stays in the tables until it is removed: with
// Tuning.Retention its items expire that long after it finished (a
// DynamoDB TTL, set by whatever finished it), after which GetRun reports
// ErrRunNotFound; DeleteRun removes a finished run at once.
//
// # Execution semantics
//
// They follow Flowcraft (docs/semantics.md lists the deliberate differences):
//
//   - maxRetries is the total number of attempts (at least 1); retryDelay
//     (ms) separates attempts, optionally growing (WithRetryBackoff); timeout
//     (ms) bounds each attempt through ctx. Attempts are counted durably, so
//     an attempt cut short by a crash counts. A panic is a failed attempt.
//     An error wrapped with Permanent stops the attempts and skips the
//     fallback.
//   - A node that fails for good runs config.fallback in its place; the
//     fallback's output becomes the node's output and routing continues from
//     the node. Without a fallback the run fails: the status names the node
//     and the error, and nothing more of the run executes.
//   - Routing: edges whose action equals the result's Action are taken;
//     if none matches, the edges without an action. An edge is taken only if
//     its condition is truthy (JavaScript truthiness). Conditions and
//     transforms are expr-lang expressions with JavaScript's operators and
//     meaning (===, &&, ||, ?., ??, comparisons that never throw; a bare
//     property path keeps Flowcraft's meaning) over result (output,
//     action), input, context, and node ids, each standing for that node's
//     output. In a transform, input is the source node's output; the
//     transform's result is the target's input, even when the target has
//     "inputs". A condition that fails to evaluate is false and a transform
//     that fails gives nil, as in Flowcraft: a run is never failed by an
//     expression (see SqsAdapter.ExpressionErrors).
//   - Joins: a node with several distinct predecessors waits for all of
//     their edges to be resolved — taken, or dead because the source took
//     another branch or was skipped ("all", the default), or runs once on the
//     first taken edge ("any"). A join whose edges are all dead is skipped,
//     and so are the nodes after it that nothing else reaches.
//   - A run completes when every node has run or been skipped, whatever
//     leaves its branches end in.
//   - The built-in nodes wait, webhook and sleep suspend their node without
//     an output: ResumeRun, a webhook delivery (DeliverWebhook,
//     WebhookHandler) or the sleep's timer commits it later, exactly once,
//     and the run goes on from it. GetRun reports a run whose only
//     remaining work is waiting as StatusAwaiting.
//   - The built-in batch nodes batch-scatter and batch-gather (Flowcraft's
//     .batch()), or a map node that compiles to them, run a registered
//     worker once per item of an array, one job per item, and gather the
//     outputs in input order.
//
// # Delivery guarantees
//
// Each node's outcome — output, routing decision and context writes — is
// committed at most once, by a conditional write; duplicated or redelivered
// jobs replay only idempotent steps. Node functions run at least once per
// commit: use NodeContext.IdempotencyKey for external side effects. A
// message is deleted only after everything it caused is durable. Long nodes
// keep their message: its visibility and the node's lease are extended while
// it runs, and the node's ctx is cancelled if the message is lost.
// docs/protocol.md describes the protocol step by step.
//
// # Errors
//
// Errors wrap a few sentinels (ErrRunNotFound, ErrInvalidBlueprint,
// ErrValueTooLarge, …; package store has those of the storage seams) and keep SDK errors in the
// chain; test them with errors.Is and errors.As. Background failures of the
// poller are logged through the slog.Logger of WithLogger, with the keys
// run_id, blueprint_id, node_id, attempt and msg_id.
//
// # Values
//
// Context values and node outputs are JSON-like: map[string]any, []any,
// string, bool, nil, int64 (integers that fit, without precision loss) and
// float64. Other Go values, such as structs with json tags, are converted
// through encoding/json.
package sqsadapter
