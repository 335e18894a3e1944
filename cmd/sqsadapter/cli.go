package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/interp"
	"github.com/flowcraft/sqsadapter/store"
)

// parts are what a command works on: the queues, the stores, the tables'
// names (and a DynamoDB client to create them), the blueprints.
type parts struct {
	sqs        sqsadapter.SQSClient
	db         sqsadapter.DynamoDBClient // nil: tables cannot be created
	contexts   sqsadapter.ContextStore
	coord      sqsadapter.CoordinationStore
	queueURL   string
	dlqURL     func(context.Context) (string, error)
	tables     sqsadapter.TableNames
	blueprints []*sqsadapter.Blueprint
	// retention is the workers' Tuning.Retention (0: none), so that a run
	// the tool cancels expires as the runs the workers finish do.
	retention time.Duration
}

// connector makes the parts from the environment.
type connector func(ctx context.Context) (*parts, error)

// usageError is a command line the tool does not accept (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errRunNotCompleted makes the exit status 1 after the status was printed.
var errRunNotCompleted = errors.New("the run did not complete")

// errNotDeleted makes the exit status 1 after delete printed its results.
var errNotDeleted = errors.New("a run was not deleted")

const usage = `usage: sqsadapter [-json] COMMAND [flags] [args]

  tables create                      create the three tables (or check those that exist)
  start -blueprint ID [-version V] [-input JSON] [-run-id ID] [-wait D]
                                     start a run and print its id (with -wait: wait and print its status)
  status RUN                         a run's status, with each node's state
  wait RUN [-timeout D]              wait until the run finishes, then print its status
  cancel RUN [-reason TEXT]          cancel a run
  delete RUN...                      delete finished runs: their records and contexts
  resume RUN NODE [-output JSON] [-action A]
                                     resume a waiting node with an output and an action
  list [-blueprint ID] [-limit N]    list running runs, oldest first
  reconcile [-threshold D]           one reconcile pass over runs without progress for D
  redrive [-max N]                   move jobs from the dead-letter queue back to the job queue

Environment: the AWS settings (AWS_REGION, credentials, AWS_ENDPOINT_URL_SQS, ...),
SQSADAPTER_QUEUE_URL or SQSADAPTER_QUEUE_NAME, SQSADAPTER_DLQ_URL or SQSADAPTER_DLQ_NAME,
SQSADAPTER_CONTEXT_TABLE, SQSADAPTER_STATUS_TABLE, SQSADAPTER_COORDINATION_TABLE,
SQSADAPTER_BLUEPRINTS (a blueprint's JSON file, or a folder of them), and
SQSADAPTER_RETENTION (the workers' retention of finished runs, e.g. 720h; for cancel).
`

// run runs the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, connect connector) int {
	err := dispatch(ctx, args, stdout, connect)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sqsadapter: %s\n\n%s", ue.msg, usage)
		return 2
	case errors.Is(err, errRunNotCompleted), errors.Is(err, errNotDeleted):
		return 1
	default:
		fmt.Fprintln(stderr, "sqsadapter:", err)
		return 1
	}
}

func dispatch(ctx context.Context, args []string, stdout io.Writer, connect connector) error {
	global := flag.NewFlagSet("sqsadapter", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	asJSON := global.Bool("json", false, "print JSON instead of tables")
	if err := global.Parse(args); err != nil {
		return usagef("%v", err)
	}
	args = global.Args()
	if len(args) == 0 {
		return usagef("no command")
	}
	out := &printer{w: stdout, json: *asJSON}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	jsonFlag := fs.Bool("json", false, "print JSON")
	// parse parses the command's flags, which may follow its arguments
	// ("status RUN -json"), and checks that it has min to max arguments.
	parse := func(min, max int) error {
		var pos []string
		for rest := rest; ; {
			if err := fs.Parse(rest); err != nil {
				return usagef("%s: %v", cmd, err)
			}
			if fs.NArg() == 0 {
				break
			}
			pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
		}
		if len(pos) < min || len(pos) > max {
			return usagef("%s: %d arguments, want %d", cmd, len(pos), min)
		}
		fs.Parse(pos) //nolint:errcheck // positional arguments only: no flag to fail
		out.json = out.json || *jsonFlag
		return nil
	}
	switch cmd {
	case "tables":
		if err := parse(1, 1); err != nil {
			return err
		}
		if fs.Arg(0) != "create" {
			return usagef("tables: unknown subcommand %q (create)", fs.Arg(0))
		}
		p, err := connect(ctx)
		if err != nil {
			return err
		}
		if p.db == nil {
			return errors.New("tables create: no DynamoDB client")
		}
		if err := sqsadapter.CreateTables(ctx, p.db, p.tables); err != nil {
			return err
		}
		return out.kv(map[string]any{"context": p.tables.Context, "status": p.tables.Status, "coordination": p.tables.Coordination})
	case "start":
		bp := fs.String("blueprint", "", "blueprint id (required)")
		version := fs.String("version", "", "blueprint version (default: the latest registered)")
		input := fs.String("input", "{}", "initial context, a JSON object")
		runID := fs.String("run-id", "", "run id (makes starting idempotent)")
		wait := fs.Duration("wait", 0, "wait this long for the run to finish and print its status")
		if err := parse(0, 0); err != nil {
			return err
		}
		if *bp == "" {
			return usagef("start: -blueprint is required")
		}
		var initial map[string]any
		if err := json.Unmarshal([]byte(*input), &initial); err != nil {
			return usagef("start: -input must be a JSON object: %v", err)
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		var opts []sqsadapter.RunOption
		if *runID != "" {
			opts = append(opts, sqsadapter.WithRunID(*runID))
		}
		if *version != "" {
			opts = append(opts, sqsadapter.WithBlueprintVersion(*version))
		}
		id, err := a.StartRun(ctx, *bp, initial, opts...)
		if err != nil {
			return err
		}
		if *wait <= 0 {
			return out.kv(map[string]any{"runId": id})
		}
		return waitAndPrint(ctx, a, out, id, *wait)
	case "status", "wait":
		timeout := time.Duration(0)
		if cmd == "wait" {
			fs.DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait")
		}
		if err := parse(1, 1); err != nil {
			return err
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		if cmd == "wait" {
			return waitAndPrint(ctx, a, out, fs.Arg(0), timeout)
		}
		st, err := a.GetRun(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		return out.status(st)
	case "cancel":
		reason := fs.String("reason", "cancelled with the sqsadapter tool", "why")
		if err := parse(1, 1); err != nil {
			return err
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		if err := a.CancelRun(ctx, fs.Arg(0), *reason); err != nil {
			return err
		}
		return out.kv(map[string]any{"runId": fs.Arg(0), "status": "cancelled"})
	case "delete":
		if err := parse(1, math.MaxInt); err != nil {
			return err
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		var results []deleteResult
		failed := false
		for _, id := range fs.Args() {
			r := deleteResult{RunID: id, Deleted: true}
			if err := a.DeleteRun(ctx, id); err != nil {
				r.Deleted, r.Error, failed = false, err.Error(), true
				if ctx.Err() != nil {
					return err
				}
			}
			results = append(results, r)
		}
		if err := out.deleted(results); err != nil {
			return err
		}
		if failed {
			return errNotDeleted
		}
		return nil
	case "resume":
		output := fs.String("output", "null", "the node's output, JSON")
		action := fs.String("action", "", "the node's action (its edges' action)")
		if err := parse(2, 2); err != nil {
			return err
		}
		var v any
		if err := json.Unmarshal([]byte(*output), &v); err != nil {
			return usagef("resume: -output must be JSON: %v", err)
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		if err := a.ResumeRun(ctx, fs.Arg(0), fs.Arg(1), v, *action); err != nil {
			return err
		}
		return out.kv(map[string]any{"runId": fs.Arg(0), "nodeId": fs.Arg(1), "resumed": true})
	case "list":
		bp := fs.String("blueprint", "", "only runs of this blueprint")
		limit := fs.Int("limit", 100, "at most this many runs (0: all)")
		if err := parse(0, 0); err != nil {
			return err
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		var runs []*sqsadapter.RunStatus
		for cursor := ""; ; {
			page, next, err := a.ListRuns(ctx, *bp, cursor, 100)
			if err != nil {
				return err
			}
			runs = append(runs, page...)
			if next == "" || (*limit > 0 && len(runs) >= *limit) {
				break
			}
			cursor = next
		}
		if *limit > 0 && len(runs) > *limit {
			runs = runs[:*limit]
		}
		return out.runs(runs)
	case "reconcile":
		threshold := fs.Duration("threshold", 10*time.Minute, "how long a run may make no progress before its frontier is re-enqueued")
		if err := parse(0, 0); err != nil {
			return err
		}
		a, _, err := adapter(ctx, connect)
		if err != nil {
			return err
		}
		st, err := a.Reconcile(ctx, *threshold)
		if err != nil {
			return err
		}
		return out.kv(map[string]any{"scanned": st.Scanned, "stalled": st.Stalled, "jobs": st.Jobs, "errors": st.Errors})
	case "redrive":
		maxMsgs := fs.Int("max", 0, "move at most this many messages (0: until the dead-letter queue is empty)")
		if err := parse(0, 0); err != nil {
			return err
		}
		p, err := connect(ctx)
		if err != nil {
			return err
		}
		moved, err := redrive(ctx, p, *maxMsgs)
		if err != nil {
			return fmt.Errorf("redrive: %d moved, then: %w", moved, err)
		}
		return out.kv(map[string]any{"moved": moved})
	case "help", "-h", "-help":
		_, err := io.WriteString(stdout, usage)
		return err
	}
	return usagef("unknown command %q", cmd)
}

// adapter is an adapter on p's parts with its blueprints; it runs no node,
// so each node function is a stand-in that says so.
func adapter(ctx context.Context, connect connector) (*sqsadapter.SqsAdapter, *parts, error) {
	p, err := connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	reg := sqsadapter.NodeRegistry{}
	for _, bp := range p.blueprints {
		for _, n := range bp.Nodes {
			if interp.Builtin(n.Uses) == "" {
				reg[n.Uses] = func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
					return sqsadapter.NodeResult{}, errors.New("the sqsadapter tool runs no node")
				}
			}
		}
	}
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(p.sqs), sqsadapter.WithQueueURL(p.queueURL),
		sqsadapter.WithContextStore(p.contexts), sqsadapter.WithCoordinationStore(p.coord),
		sqsadapter.WithRegistry(reg), sqsadapter.WithBlueprints(p.blueprints...),
		sqsadapter.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		sqsadapter.WithTuning(sqsadapter.Tuning{Retention: p.retention}),
	)
	return a, p, err
}

func waitAndPrint(ctx context.Context, a *sqsadapter.SqsAdapter, out *printer, runID string, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := a.WaitForRun(wctx, runID)
	if err != nil {
		return err
	}
	if err := out.status(st); err != nil {
		return err
	}
	if st.Status != sqsadapter.StatusCompleted {
		return errRunNotCompleted
	}
	return nil
}

// redrive moves up to max messages (0: all) from the dead-letter queue to
// the job queue: each is sent before it is deleted, so none is lost (a
// failure in between leaves a copy in both, which the protocol absorbs).
func redrive(ctx context.Context, p *parts, max int) (int, error) {
	dlq, err := p.dlqURL(ctx)
	if err != nil {
		return 0, err
	}
	moved := 0
	for max <= 0 || moved < max {
		n := int32(10)
		if max > 0 {
			n = int32(min(10, max-moved))
		}
		// Message attributes (a job's trace context) go back with the body.
		out, err := p.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(dlq), MaxNumberOfMessages: n, VisibilityTimeout: 60,
			MessageAttributeNames: []string{"All"}})
		if err != nil {
			return moved, err
		}
		if len(out.Messages) == 0 {
			return moved, nil
		}
		var send []sqstypes.SendMessageBatchRequestEntry
		for i, m := range out.Messages {
			send = append(send, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: m.Body, MessageAttributes: m.MessageAttributes})
		}
		sent, err := p.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(p.queueURL), Entries: send})
		if err != nil {
			return moved, err
		}
		failed := map[string]bool{}
		for _, f := range sent.Failed {
			failed[aws.ToString(f.Id)] = true
		}
		var del []sqstypes.DeleteMessageBatchRequestEntry
		for i, m := range out.Messages {
			if !failed[strconv.Itoa(i)] {
				del = append(del, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
			}
		}
		if len(del) > 0 {
			if _, err := p.sqs.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(dlq), Entries: del}); err != nil {
				return moved, err
			}
		}
		moved += len(del)
		if len(failed) > 0 {
			return moved, fmt.Errorf("%d messages not sent to the job queue (left in the dead-letter queue)", len(failed))
		}
	}
	return moved, nil
}

// printer writes a command's result as a table or as JSON.
type printer struct {
	w    io.Writer
	json bool
}

func (p *printer) encode(v any) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (p *printer) kv(m map[string]any) error {
	if p.json {
		return p.encode(m)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(tw, "%s\t%v\n", k, m[k])
	}
	return tw.Flush()
}

func (p *printer) status(st *sqsadapter.RunStatus) error {
	if p.json {
		return p.encode(st)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "run\t%s\nblueprint\t%s %s\nstatus\t%s\ncreated\t%s\n", st.RunID, st.BlueprintID, st.BlueprintVersion, st.Status, st.CreatedAt.Format(time.RFC3339))
	if !st.FinishedAt.IsZero() {
		fmt.Fprintf(tw, "finished\t%s (%v)\n", st.FinishedAt.Format(time.RFC3339), st.FinishedAt.Sub(st.CreatedAt).Round(time.Millisecond))
	}
	if st.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", st.Error)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NODE\tSTATE\tATTEMPTS\tDETAIL")
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for k := range st.Nodes {
			if !yield(k) {
				return
			}
		}
	}) {
		n := st.Nodes[id]
		detail := n.Error
		switch {
		case n.Wait != nil && detail == "":
			detail = describeWait(n.Wait)
		case n.LeaseOwner != "":
			detail = "on " + n.LeaseOwner
		case n.Fallback != "":
			detail = "fallback " + n.Fallback
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", id, n.State, n.Attempts, detail)
	}
	return tw.Flush()
}

// describeWait says what a node waits for, in a table's cell.
func describeWait(w *store.Wait) string {
	parts := []string{w.Reason}
	if !w.WakeAt.IsZero() {
		parts = append(parts, "until "+w.WakeAt.Format(time.RFC3339))
	}
	if w.WebhookID != "" {
		parts = append(parts, "webhook "+w.WebhookID)
	}
	if len(w.Details) > 0 {
		if b, err := json.Marshal(w.Details); err == nil {
			parts = append(parts, string(b))
		}
	}
	return strings.Join(parts, " ")
}

// deleteResult is the outcome of deleting one run.
type deleteResult struct {
	RunID   string `json:"runId"`
	Deleted bool   `json:"deleted"`
	Error   string `json:"error,omitempty"`
}

func (p *printer) deleted(results []deleteResult) error {
	if p.json {
		return p.encode(results)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tRESULT")
	for _, r := range results {
		result := "deleted"
		if !r.Deleted {
			result = r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\n", r.RunID, result)
	}
	return tw.Flush()
}

func (p *printer) runs(runs []*sqsadapter.RunStatus) error {
	if p.json {
		if runs == nil {
			runs = []*sqsadapter.RunStatus{}
		}
		return p.encode(runs)
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tBLUEPRINT\tSTATUS\tCREATED")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.RunID, strings.TrimSpace(r.BlueprintID+" "+r.BlueprintVersion), r.Status, r.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// envConnector makes the parts from the standard AWS configuration and the
// worker's variables (getenv).
func envConnector(getenv func(string) string) connector {
	return func(ctx context.Context) (*parts, error) {
		or := func(name, def string) string {
			if v := getenv(name); v != "" {
				return v
			}
			return def
		}
		cfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("load AWS configuration: %w", err)
		}
		if cfg.Region == "" {
			return nil, errors.New("no AWS region: set AWS_REGION (or a region in the shared config's profile)")
		}
		sq := sqs.NewFromConfig(cfg)
		db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
			// DynamoDB Local's error responses carry no CRC32 header.
			if e := aws.ToString(o.BaseEndpoint); strings.Contains(e, "://127.0.0.1:") || strings.Contains(e, "://localhost:") {
				o.DisableValidateResponseChecksum = true
			}
		})
		p := &parts{
			sqs: sq, db: db,
			tables: sqsadapter.TableNames{
				Context:      or("SQSADAPTER_CONTEXT_TABLE", "flowcraft-context"),
				Status:       or("SQSADAPTER_STATUS_TABLE", "flowcraft-status"),
				Coordination: or("SQSADAPTER_COORDINATION_TABLE", "flowcraft-coordination"),
			},
		}
		p.contexts = sqsadapter.NewDynamoDbContext(db, p.tables.Context, p.tables.Status)
		p.coord = sqsadapter.NewDynamoDbCoordinationStore(db, p.tables.Coordination)
		queueName := or("SQSADAPTER_QUEUE_NAME", "flowcraft-jobs")
		resolve := func(ctx context.Context, url, name string) (string, error) {
			if url != "" {
				return url, nil
			}
			out, err := sq.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
			if err != nil {
				return "", fmt.Errorf("resolve the URL of queue %q (or set its URL): %w", name, err)
			}
			return aws.ToString(out.QueueUrl), nil
		}
		// The job queue's URL is resolved only when a command sends to it.
		p.queueURL = getenv("SQSADAPTER_QUEUE_URL")
		if p.queueURL == "" {
			if p.queueURL, err = resolve(ctx, "", queueName); err != nil {
				return nil, err
			}
		} else if getenv("SQSADAPTER_QUEUE_NAME") == "" {
			queueName = p.queueURL[strings.LastIndex(p.queueURL, "/")+1:]
		}
		p.dlqURL = func(ctx context.Context) (string, error) {
			return resolve(ctx, getenv("SQSADAPTER_DLQ_URL"), or("SQSADAPTER_DLQ_NAME", queueName+"-dlq"))
		}
		if p.blueprints, err = loadBlueprints(getenv("SQSADAPTER_BLUEPRINTS")); err != nil {
			return nil, err
		}
		if v := getenv("SQSADAPTER_RETENTION"); v != "" {
			if p.retention, err = time.ParseDuration(v); err != nil {
				return nil, fmt.Errorf("SQSADAPTER_RETENTION: %w", err)
			}
		}
		return p, nil
	}
}

// loadBlueprints reads a blueprint's JSON file, or every *.json file of a
// folder ("" : none).
func loadBlueprints(path string) ([]*sqsadapter.Blueprint, error) {
	if path == "" {
		return nil, nil
	}
	files := []string{path}
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("SQSADAPTER_BLUEPRINTS: %w", err)
	} else if fi.IsDir() {
		if files, err = filepath.Glob(filepath.Join(path, "*.json")); err != nil {
			return nil, err
		}
	}
	var bps []*sqsadapter.Blueprint
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		bp, err := sqsadapter.ParseBlueprint(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		bps = append(bps, bp)
	}
	return bps, nil
}
