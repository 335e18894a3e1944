// Command bench measures what executing workflow nodes costs on SQS and
// DynamoDB: AWS requests per executed node, by operation and all in (as a
// user pays: the workers' requests with every empty and cancelled long
// poll, StartRun, and one WaitForRun per run), DynamoDB capacity units per
// node, throughput, the process's CPU time per node, the client-observed
// latency of a run (StartRun called to WaitForRun returned) and the latency
// from enqueueing a job to its node starting.
//
// It talks to the endpoints named by the environment, as the SDK reads them
// (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL), or
// else by SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT, which
// scripts/emulators.sh writes. Without any endpoint it refuses to run unless
// -real-aws is given (then it uses the default AWS configuration, and costs
// money). It creates fresh tables (CreateTables) and a fresh plain queue per
// phase, and deletes them at the end. See BENCHMARKS.md for figures.
//
//	state=$(scripts/emulators.sh start) && . $state/env
//	go run ./examples/bench -runs 200 -blueprints chain10,chain100:50,fanout10:150,diamond
//	go run ./examples/bench -blueprints chain10:100@10,fanout10:100@10,diamond:300@100,chain10:30@1,diamond:30@1 -idle 60s
//	SQSADAPTER_EMULATOR_STATE=$state scripts/emulators.sh stop
//
// A warm-up phase (-warmup runs of chain10, not reported) comes first:
// freshly started emulators answer slowly, and slower jobs batch less.
//
// Each blueprint (and each -context-bytes value) is one phase: -workers
// fresh SqsAdapters (WithConcurrency(-concurrency)) run in this process
// while -inflight runs (name@K: K) are kept going at once until -runs runs
// (name:N: N) completed; then the workers shut down (their last, cancelled
// long polls count) and the phase's counts are read. Each run is started
// with StartRun and waited for with WaitForRun at once, as a client would;
// a finished run is replaced when WaitForRun returns. With -idle D, the
// workers then run for D on an empty queue, and the report gives their
// requests per worker per hour.
//
// CPU: the workers run in this process, so the process CPU time per node
// (getrusage over the phase) also holds the clients' StartRun and
// WaitForRun calls and the program's bookkeeping: an upper bound of the
// workers' own. The report also gives the workers' share, estimated by
// splitting it in proportion to the SDK calls made.
//
// Counting: every SDK client carries a reqcount.RequestCounter. The
// workers share one counter; the adapter that starts runs (StartRun:
// CreateRun and the start nodes' sends) has its own, and so does the one
// that waits for runs (WaitForRun's GetRun polls). Per-node figures are
// (workers + StartRun) / (runs × nodes of the blueprint), and all in
// (workers + StartRun + WaitForRun) / (runs × nodes); polling is also
// reported per run. Capacity units are also summed by table, to
// tell node records and joins (context and coordination tables, written by
// workers) from run records (status table) and the initial context (written
// by CreateRun). Setting up and removing the queue and tables is not counted.
//
// SQS answers a long poll empty only when its wait time has passed. fauxqs,
// the SQS emulator of scripts/emulators.sh, wakes every waiting long poll
// when a message arrives, and all but one of them return empty at once. With
// -hold-long-polls (on by default for a loopback SQS endpoint) such an early
// empty answer is not returned to the adapter: the poll is asked again,
// through an uncounted client, for the rest of its wait, so that the adapter
// behaves, and the counter counts, as with SQS. The report gives how many
// early answers were held.
//
// With -trace FILE, every counted request of the measured phases is also
// written to FILE, one JSON line each (internal/reqtrace: time, service,
// operation, and the table and key of each item, or the queue and message
// count), with a line per phase giving its executed nodes; the load model
// reads it: go run ./internal/cmd/loadmodel -trace FILE (docs/scale.md).
//
// Latency, measured in this process (every worker is in it):
//   - enqueue→start: from the SendMessageBatch call that carried a node's
//     job (the first one, if it was sent twice) to the start of the node's
//     function;
//   - ready→start: from the moment the node became ready — StartRun was
//     called (start nodes), or its last predecessor's function returned —
//     to the start of its function. It adds the predecessor's commit and
//     send to enqueue→start.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/reqcount"
	"github.com/flowcraft/sqsadapter/internal/reqtrace"
)

type options struct {
	runs          int
	workers       int
	concurrency   int
	inflight      int
	blueprints    []phaseSpec
	contextBytes  []int
	waitTime      time.Duration
	receiveWindow time.Duration
	deleteLinger  time.Duration
	chainNodes    int
	retention     time.Duration
	runTimeout    time.Duration
	warmup        int
	sqsEndpoint   string
	ddbEndpoint   string
	realAWS       bool
	holdPolls     string
	verbose       bool
	trace         string
	idle          time.Duration
}

type phaseSpec struct {
	name     string
	runs     int // 0: -runs
	inflight int // 0: -inflight
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.runs, "runs", 100, "runs per blueprint (a blueprint written name:N in -blueprints runs N times)")
	fs.IntVar(&o.workers, "workers", 3, "SqsAdapter workers in this process")
	fs.IntVar(&o.concurrency, "concurrency", 10, "jobs each worker runs at once (WithConcurrency)")
	fs.IntVar(&o.inflight, "inflight", 50, "runs kept in progress at once")
	bps := fs.String("blueprints", "chain10,chain100,fanout10,diamond",
		"comma list of chain10, chain100, fanout10 (a start node, 10 nodes, an all join), diamond (a → b, c → d, an all join); name:N sets that blueprint's runs, name@K (or name:N@K) its runs in flight")
	ctxBytes := fs.String("context-bytes", "0", "comma list of sizes (bytes) of an unrelated initial context key; each size repeats every blueprint")
	fs.DurationVar(&o.waitTime, "wait-time", 20*time.Second, "ReceiveMessage long-poll wait (WithWaitTime)")
	fs.DurationVar(&o.receiveWindow, "receive-window", 50*time.Millisecond, "Tuning.ReceiveWindow (0: none)")
	fs.DurationVar(&o.deleteLinger, "delete-linger", time.Second, "Tuning.DeleteLinger (0: none)")
	fs.IntVar(&o.chainNodes, "chain-nodes", 16, "Tuning.ChainNodes: jobs a message runs inline after its own (0 or less: none)")
	fs.DurationVar(&o.retention, "retention", 0, "Tuning.Retention: finished runs' items get a TTL (0: none)")
	fs.DurationVar(&o.runTimeout, "run-timeout", 5*time.Minute, "how long one run may take")
	fs.IntVar(&o.warmup, "warmup", 100, "runs of chain10 before the measured phases, not reported (0: none)")
	fs.StringVar(&o.sqsEndpoint, "sqs-endpoint", "", "SQS endpoint URL (default: from the environment)")
	fs.StringVar(&o.ddbEndpoint, "dynamodb-endpoint", "", "DynamoDB endpoint URL (default: from the environment)")
	fs.BoolVar(&o.realAWS, "real-aws", false, "allow running without an endpoint, against AWS itself (costs money)")
	fs.StringVar(&o.holdPolls, "hold-long-polls", "auto",
		"re-ask, uncounted, a long poll that the server answered empty before its wait time (as SQS never does): on, off, or auto (on for a loopback SQS endpoint)")
	fs.BoolVar(&o.verbose, "v", false, "log the workers' info messages")
	fs.DurationVar(&o.idle, "idle", 0, "after the phases, keep the workers running on an empty queue this long and report their requests per worker per hour (0: no idle phase)")
	fs.StringVar(&o.trace, "trace", "", "write a trace of the measured phases' requests to this file, one JSON line per request (see internal/reqtrace; read it with go run ./internal/cmd/loadmodel)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch o.holdPolls {
	case "on", "off", "auto":
	default:
		return o, fmt.Errorf("-hold-long-polls: %q is not on, off or auto", o.holdPolls)
	}
	if o.runs < 1 || o.workers < 1 || o.concurrency < 1 || o.inflight < 1 || o.warmup < 0 {
		return o, errors.New("-runs, -workers, -concurrency and -inflight must be at least 1, -warmup at least 0")
	}
	for _, s := range strings.Split(*bps, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		s, k, hasK := strings.Cut(s, "@")
		name, n, hasN := strings.Cut(s, ":")
		p := phaseSpec{name: name}
		if hasK {
			v, err := strconv.Atoi(k)
			if err != nil || v < 1 {
				return o, fmt.Errorf("blueprint %q: bad runs in flight %q", name, k)
			}
			p.inflight = v
		}
		if _, ok := blueprintSpecs[name]; !ok {
			return o, fmt.Errorf("unknown blueprint %q (want chain10, chain100, fanout10 or diamond)", name)
		}
		if hasN {
			v, err := strconv.Atoi(n)
			if err != nil || v < 1 {
				return o, fmt.Errorf("blueprint %q: bad run count %q", name, n)
			}
			p.runs = v
		}
		o.blueprints = append(o.blueprints, p)
	}
	if len(o.blueprints) == 0 {
		return o, errors.New("-blueprints is empty")
	}
	for _, s := range strings.Split(*ctxBytes, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 0 || v > 300<<10 {
			return o, fmt.Errorf("-context-bytes: %q is not a size in [0, 300 KiB]", s)
		}
		o.contextBytes = append(o.contextBytes, v)
	}
	return o, nil
}

// ---------------------------------------------------------------------------
// Blueprints

// shape is a blueprint with what the measurements need to know about it.
type shape struct {
	id       string
	json     string
	nodes    int
	preds    map[string][]string // node → predecessors
	terminal string              // the one leaf: the last node to run
}

var blueprintSpecs = map[string]func() shape{
	"chain10":  func() shape { return chain("chain10", 10) },
	"chain100": func() shape { return chain("chain100", 100) },
	"fanout10": func() shape { return fanout("fanout10", 10) },
	"diamond": func() shape {
		return build("diamond", []string{"a", "b", "c", "d"}, map[string]bool{"d": true},
			[][2]string{{"a", "b"}, {"a", "c"}, {"b", "d"}, {"c", "d"}}, "d")
	},
}

func chain(id string, n int) shape {
	var nodes []string
	var edges [][2]string
	for i := range n {
		nodes = append(nodes, fmt.Sprintf("c%d", i))
		if i > 0 {
			edges = append(edges, [2]string{nodes[i-1], nodes[i]})
		}
	}
	return build(id, nodes, nil, edges, nodes[n-1])
}

func fanout(id string, n int) shape {
	nodes := []string{"start"}
	var edges [][2]string
	for i := range n {
		f := fmt.Sprintf("f%d", i)
		nodes = append(nodes, f)
		edges = append(edges, [2]string{"start", f}, [2]string{f, "join"})
	}
	nodes = append(nodes, "join")
	return build(id, nodes, map[string]bool{"join": true}, edges, "join")
}

func build(id string, nodes []string, allJoins map[string]bool, edges [][2]string, terminal string) shape {
	type node struct {
		ID     string         `json:"id"`
		Uses   string         `json:"uses"`
		Config map[string]any `json:"config,omitempty"`
	}
	type edge struct {
		Source string `json:"source"`
		Target string `json:"target"`
	}
	bp := struct {
		ID    string `json:"id"`
		Nodes []node `json:"nodes"`
		Edges []edge `json:"edges"`
	}{ID: id}
	s := shape{id: id, nodes: len(nodes), preds: map[string][]string{}, terminal: terminal}
	for _, n := range nodes {
		nd := node{ID: n, Uses: "step"}
		if allJoins[n] {
			nd.Config = map[string]any{"joinStrategy": "all"}
		}
		bp.Nodes = append(bp.Nodes, nd)
	}
	for _, e := range edges {
		bp.Edges = append(bp.Edges, edge{e[0], e[1]})
		s.preds[e[1]] = append(s.preds[e[1]], e[0])
	}
	b, err := json.Marshal(bp)
	if err != nil {
		panic(err)
	}
	s.json = string(b)
	return s
}

// ---------------------------------------------------------------------------
// In-process recording of node starts, finishes and sends

type recorder struct {
	mu         sync.Mutex
	runStart   map[string]time.Time // run → StartRun called
	enqueued   map[string]time.Time // run/node → first send call
	started    map[string]time.Time // run/node → first function start
	finished   map[string]time.Time // run/node → first function return
	executions atomic.Int64
}

func newRecorder() *recorder {
	return &recorder{
		runStart: map[string]time.Time{}, enqueued: map[string]time.Time{},
		started: map[string]time.Time{}, finished: map[string]time.Time{},
	}
}

// current is the recorder of the phase being measured.
var current atomic.Pointer[recorder]

func (r *recorder) expect(runID string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runStart[runID] = at
}

func firstTime(m map[string]time.Time, k string, t time.Time) {
	if _, ok := m[k]; !ok {
		m[k] = t
	}
}

func (r *recorder) sent(runID, nodeID string, at time.Time) {
	r.mu.Lock()
	firstTime(r.enqueued, runID+"/"+nodeID, at)
	r.mu.Unlock()
}

// step is the node function of every node: it records its start and
// finish and returns a small output.
func step(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
	r := current.Load()
	if r == nil {
		return sqsadapter.NodeResult{Output: map[string]any{"node": nc.NodeID}}, nil
	}
	r.executions.Add(1)
	k := nc.RunID + "/" + nc.NodeID
	r.mu.Lock()
	firstTime(r.started, k, time.Now())
	r.mu.Unlock()
	out := sqsadapter.NodeResult{Output: map[string]any{"node": nc.NodeID}}
	r.mu.Lock()
	firstTime(r.finished, k, time.Now())
	r.mu.Unlock()
	return out, nil
}

// ---------------------------------------------------------------------------
// SQS client wrapper: records send times and batch fill

type sqsStats struct {
	receives, emptyReceives, received atomic.Int64
	earlyEmpty                        atomic.Int64 // long polls the server ended empty before their wait
	sendBatches, sentEntries          atomic.Int64
	deleteBatches, deletedEntries     atomic.Int64
}

func (s *sqsStats) reset() {
	for _, v := range []*atomic.Int64{&s.receives, &s.emptyReceives, &s.received, &s.earlyEmpty, &s.sendBatches, &s.sentEntries, &s.deleteBatches, &s.deletedEntries} {
		v.Store(0)
	}
}

type recordingSQS struct {
	*sqs.Client
	stats *sqsStats
	// uncounted, when set, completes long polls that the server ended
	// empty before their wait time (see holdLongPolls).
	uncounted *sqs.Client
}

func (c *recordingSQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	at := time.Now()
	out, err := c.Client.SendMessageBatch(ctx, in, optFns...)
	if err != nil {
		return out, err
	}
	c.stats.sendBatches.Add(1)
	failed := map[string]bool{}
	for _, f := range out.Failed {
		failed[aws.ToString(f.Id)] = true
	}
	r := current.Load()
	for _, e := range in.Entries {
		if failed[aws.ToString(e.Id)] {
			continue
		}
		c.stats.sentEntries.Add(1)
		var j sqsadapter.Job
		if err := json.Unmarshal([]byte(aws.ToString(e.MessageBody)), &j); err == nil && r != nil {
			r.sent(j.RunID, j.NodeID, at)
		}
	}
	return out, nil
}

func (c *recordingSQS) SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	at := time.Now()
	out, err := c.Client.SendMessage(ctx, in, optFns...)
	if err == nil {
		c.stats.sendBatches.Add(1)
		c.stats.sentEntries.Add(1)
		var j sqsadapter.Job
		if derr := json.Unmarshal([]byte(aws.ToString(in.MessageBody)), &j); derr == nil {
			if r := current.Load(); r != nil {
				r.sent(j.RunID, j.NodeID, at)
			}
		}
	}
	return out, err
}

// ReceiveMessage receives through the counted client. SQS answers a long
// poll empty only when its wait time has passed; an emulator that answers it
// empty earlier (fauxqs wakes every waiting poll when one message arrives,
// and all but one find nothing) is asked again, through the uncounted
// client, for the rest of the wait, so that the adapter sees, and the
// counter counts, what SQS would do. Such early answers are counted apart.
func (c *recordingSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	begin := time.Now()
	wait := time.Duration(in.WaitTimeSeconds) * time.Second
	out, err := c.Client.ReceiveMessage(ctx, in, optFns...)
	for err == nil && len(out.Messages) == 0 && c.uncounted != nil {
		left := wait - time.Since(begin)
		if left < time.Second {
			break
		}
		c.stats.earlyEmpty.Add(1)
		again := *in
		again.WaitTimeSeconds = int32(left / time.Second)
		out, err = c.uncounted.ReceiveMessage(ctx, &again, optFns...)
	}
	if err == nil {
		c.stats.receives.Add(1)
		c.stats.received.Add(int64(len(out.Messages)))
		if len(out.Messages) == 0 {
			c.stats.emptyReceives.Add(1)
		}
	}
	return out, err
}

func (c *recordingSQS) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	out, err := c.Client.DeleteMessageBatch(ctx, in, optFns...)
	if err == nil {
		c.stats.deleteBatches.Add(1)
		c.stats.deletedEntries.Add(int64(len(in.Entries) - len(out.Failed)))
	}
	return out, err
}

func (c *recordingSQS) DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	out, err := c.Client.DeleteMessage(ctx, in, optFns...)
	if err == nil {
		c.stats.deleteBatches.Add(1)
		c.stats.deletedEntries.Add(1)
	}
	return out, err
}

var _ sqsadapter.SQSClient = (*recordingSQS)(nil)

// ---------------------------------------------------------------------------
// AWS clients

// role is one set of SDK clients with its own request counter.
type role struct {
	counter  *reqcount.RequestCounter
	capacity *tableCapacity
	sqs      *recordingSQS
	ddb      *dynamodb.Client
	stats    *sqsStats
}

// tableCapacity sums the capacity units (read and write) that DynamoDB
// reports, by table. It reads the ConsumedCapacity that the
// RequestCounter asks for.
type tableCapacity struct {
	mu    sync.Mutex
	units map[string]float64
}

func (t *tableCapacity) addTo(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("bench.tableCapacity",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err == nil {
				t.add(out.Result)
			}
			return out, md, err
		}), middleware.After)
}

func (t *tableCapacity) add(result any) {
	var caps []ddbtypes.ConsumedCapacity
	one := func(c *ddbtypes.ConsumedCapacity) {
		if c != nil {
			caps = append(caps, *c)
		}
	}
	switch out := result.(type) {
	case *dynamodb.GetItemOutput:
		one(out.ConsumedCapacity)
	case *dynamodb.PutItemOutput:
		one(out.ConsumedCapacity)
	case *dynamodb.UpdateItemOutput:
		one(out.ConsumedCapacity)
	case *dynamodb.DeleteItemOutput:
		one(out.ConsumedCapacity)
	case *dynamodb.QueryOutput:
		one(out.ConsumedCapacity)
	case *dynamodb.BatchGetItemOutput:
		caps = out.ConsumedCapacity
	case *dynamodb.BatchWriteItemOutput:
		caps = out.ConsumedCapacity
	case *dynamodb.TransactWriteItemsOutput:
		caps = out.ConsumedCapacity
	case *dynamodb.TransactGetItemsOutput:
		caps = out.ConsumedCapacity
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range caps {
		u := aws.ToFloat64(c.CapacityUnits)
		if u == 0 {
			u = aws.ToFloat64(c.ReadCapacityUnits) + aws.ToFloat64(c.WriteCapacityUnits)
		}
		t.units[aws.ToString(c.TableName)] += u
	}
}

func (t *tableCapacity) reset() {
	t.mu.Lock()
	clear(t.units)
	t.mu.Unlock()
}

func (t *tableCapacity) snapshot() map[string]float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.units)
}

type endpoints struct {
	sqs, ddb string
}

func resolveEndpoints(o options) (endpoints, error) {
	first := func(vs ...string) string {
		for _, v := range vs {
			if v != "" {
				return v
			}
		}
		return ""
	}
	e := endpoints{
		sqs: first(o.sqsEndpoint, os.Getenv("AWS_ENDPOINT_URL_SQS"), os.Getenv("AWS_ENDPOINT_URL"), os.Getenv("SQSADAPTER_SQS_ENDPOINT")),
		ddb: first(o.ddbEndpoint, os.Getenv("AWS_ENDPOINT_URL_DYNAMODB"), os.Getenv("AWS_ENDPOINT_URL"), os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")),
	}
	if (e.sqs == "" || e.ddb == "") && !o.realAWS {
		return e, errors.New("no SQS or DynamoDB endpoint in the environment (AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL_DYNAMODB, " +
			"or SQSADAPTER_SQS_ENDPOINT / SQSADAPTER_DYNAMODB_ENDPOINT: `. $(scripts/emulators.sh start)/env`); " +
			"pass -real-aws to run against AWS itself")
	}
	return e, nil
}

// isLoopback reports whether an endpoint URL names this machine.
func isLoopback(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func loadConfig(ctx context.Context) (aws.Config, error) {
	// A transport that keeps enough idle connections for every worker slot
	// and every long poll.
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = 1024
		t.MaxIdleConnsPerHost = 512
	})
	return config.LoadDefaultConfig(ctx, config.WithHTTPClient(hc))
}

func newRole(base aws.Config, ep endpoints, counter *reqcount.RequestCounter, holdPolls bool, tracer *reqtrace.Tracer) *role {
	r := &role{counter: counter, stats: &sqsStats{}, capacity: &tableCapacity{units: map[string]float64{}}}
	cfg := base.Copy()
	if counter != nil {
		cfg.APIOptions = append(slices.Clone(base.APIOptions), counter.AddTo, r.capacity.addTo)
		if tracer != nil {
			cfg.APIOptions = append(cfg.APIOptions, tracer.AddTo)
		}
	}
	r.sqs = &recordingSQS{stats: r.stats, Client: sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		if ep.sqs != "" {
			o.BaseEndpoint = aws.String(ep.sqs)
		}
	})}
	if holdPolls {
		r.sqs.uncounted = sqs.NewFromConfig(base.Copy(), func(o *sqs.Options) {
			if ep.sqs != "" {
				o.BaseEndpoint = aws.String(ep.sqs)
			}
		})
	}
	r.ddb = dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if ep.ddb != "" {
			o.BaseEndpoint = aws.String(ep.ddb)
			// DynamoDB Local's error responses lack the CRC32 header.
			o.DisableValidateResponseChecksum = isLoopback(ep.ddb)
		}
	})
	return r
}

// ---------------------------------------------------------------------------
// The benchmark

type env struct {
	o        options
	hold     bool   // long polls held (recordingSQS.uncounted)
	prefix   string // of the queues and tables
	queueURL string // of the phase being measured
	cleaned  bool
	tables   sqsadapter.TableNames
	setup    *role // uncounted: queue and tables
	workers  *role
	starter  *role
	poller   *role
	shapes   map[string]shape
	bps      []*sqsadapter.Blueprint
	logger   *slog.Logger
}

type result struct {
	blueprint    string
	contextBytes int
	runs         int
	nodes        int // runs × nodes per run
	inflight     int
	executions   int64
	wall         time.Duration
	cpu          time.Duration   // this process's CPU time over the phase
	clientLat    []time.Duration // StartRun called → WaitForRun returned, per run
	readyLat     []time.Duration
	enqueueLat   []time.Duration
	work         reqcount.RequestCounts // workers + StartRun
	workers      reqcount.RequestCounts
	start        reqcount.RequestCounts
	poll         reqcount.RequestCounts
	sqsW         sqsStatsSnap
	leftover     int
	// Capacity units (read + write) per node: node records and joins
	// (workers; context and coordination tables), run records (status
	// table: CreateRun and FinishRun), the initial context (StartRun;
	// context table).
	cuNodes, cuRuns, cuInitial float64
}

type sqsStatsSnap struct {
	receives, emptyReceives, received int64
	earlyEmpty                        int64
	sendBatches, sentEntries          int64
	deleteBatches, deletedEntries     int64
}

func snap(s *sqsStats, more ...*sqsStats) sqsStatsSnap {
	var v sqsStatsSnap
	for _, s := range append([]*sqsStats{s}, more...) {
		v.receives += s.receives.Load()
		v.emptyReceives += s.emptyReceives.Load()
		v.received += s.received.Load()
		v.earlyEmpty += s.earlyEmpty.Load()
		v.sendBatches += s.sendBatches.Load()
		v.sentEntries += s.sentEntries.Load()
		v.deleteBatches += s.deleteBatches.Load()
		v.deletedEntries += s.deletedEntries.Load()
	}
	return v
}

func run(ctx context.Context, o options, out io.Writer) error {
	ep, err := resolveEndpoints(o)
	if err != nil {
		return err
	}
	base, err := loadConfig(ctx)
	if err != nil {
		return fmt.Errorf("load AWS configuration: %w", err)
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	hold := o.holdPolls == "on" || (o.holdPolls == "auto" && isLoopback(ep.sqs))
	prefix := "sqsadapter-bench-" + strings.ToLower(rand.Text()[:8])
	tables := sqsadapter.TableNames{Context: prefix + "-context", Status: prefix + "-status", Coordination: prefix + "-coordination"}
	var tracer *reqtrace.Tracer
	if o.trace != "" {
		f, err := os.Create(o.trace)
		if err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		defer f.Close()
		w := bufio.NewWriter(f)
		defer w.Flush()
		// The layout of CreateTables.
		tracer = reqtrace.New(w, map[string]reqtrace.KeySchema{
			tables.Context:      {PK: "runId", SK: "key"},
			tables.Status:       {PK: "runId"},
			tables.Coordination: {PK: "coordinationKey"},
		})
	}
	e := &env{
		o:       o,
		hold:    hold,
		setup:   newRole(base, ep, nil, false, nil),
		workers: newRole(base, ep, reqcount.NewRequestCounter(), hold, tracer),
		starter: newRole(base, ep, reqcount.NewRequestCounter(), false, tracer),
		poller:  newRole(base, ep, reqcount.NewRequestCounter(), false, tracer),
		shapes:  map[string]shape{},
		logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	names := []string{}
	for _, p := range o.blueprints {
		names = append(names, p.name)
	}
	if o.warmup > 0 {
		names = append(names, "chain10")
	}
	for _, name := range names {
		if _, ok := e.shapes[name]; ok {
			continue
		}
		s := blueprintSpecs[name]()
		bp, err := sqsadapter.ParseBlueprint([]byte(s.json))
		if err != nil {
			return fmt.Errorf("blueprint %s: %w", name, err)
		}
		e.shapes[name] = s
		e.bps = append(e.bps, bp)
	}

	e.prefix, e.tables = prefix, tables
	fmt.Fprintf(os.Stderr, "bench: SQS %s, DynamoDB %s; tables and queues %s-*; long polls held: %v\n", orAWS(ep.sqs), orAWS(ep.ddb), e.prefix, hold)
	defer e.cleanup()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err = sqsadapter.CreateTables(tctx, e.setup.ddb, e.tables)
	cancel()
	if err != nil {
		return err
	}
	if o.warmup > 0 {
		// Freshly started emulators (DynamoDB Local's JVM) answer slowly at
		// first, which makes jobs slower and batches smaller.
		fmt.Fprintf(os.Stderr, "bench: warm-up: %d runs of chain10, not reported\n", o.warmup)
		if _, err := e.phase(ctx, e.prefix+"-warmup", e.shapes["chain10"], 0, o.warmup, o.inflight); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	var results []*result
	for _, cb := range o.contextBytes {
		for i, p := range o.blueprints {
			runs, inflight := cmp.Or(p.runs, o.runs), cmp.Or(p.inflight, o.inflight)
			fmt.Fprintf(os.Stderr, "bench: %s, context %d B: %d runs, %d workers × %d, %d in flight\n", p.name, cb, runs, o.workers, o.concurrency, inflight)
			if tracer != nil {
				tracer.Enable(true)
			}
			start := time.Now()
			r, err := e.phase(ctx, fmt.Sprintf("%s-%d-%d", e.prefix, cb, i), e.shapes[p.name], cb, runs, inflight)
			if err != nil {
				return fmt.Errorf("%s (context %d B): %w", p.name, cb, err)
			}
			if tracer != nil {
				tracer.Enable(false)
				end := time.Now()
				tracer.Write(reqtrace.Record{T: unixSeconds(end), Svc: "bench", Op: "phase", Phase: &reqtrace.Phase{
					Name: label(r), Nodes: int(r.executions), Start: unixSeconds(start), End: unixSeconds(end),
				}})
				if err := tracer.Err(); err != nil {
					return fmt.Errorf("trace: %w", err)
				}
			}
			fmt.Fprintf(os.Stderr, "bench: %s done in %v: %.2f requests/node\n", p.name, r.wall.Round(time.Millisecond), perNode(r.work.Total(), r))
			results = append(results, r)
		}
	}
	var idle *idleResult
	if o.idle > 0 {
		fmt.Fprintf(os.Stderr, "bench: idle: %d workers on an empty queue for %v\n", o.workers, o.idle)
		if idle, err = e.idlePhase(ctx, e.prefix+"-idle"); err != nil {
			return fmt.Errorf("idle: %w", err)
		}
	}
	e.cleanup() // before printing, which may fail (a closed pipe)
	report(out, o, e.hold, results, idle)
	return nil
}

func orAWS(s string) string { return cmp.Or(s, "(AWS default)") }

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// createQueue creates a plain queue (visibility timeout 30 s) and returns
// its URL.
func (e *env) createQueue(ctx context.Context, name string) (string, error) {
	q, err := e.setup.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String(name),
		Attributes: map[string]string{string(sqstypes.QueueAttributeNameVisibilityTimeout): "30"},
	})
	if err != nil {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	return aws.ToString(q.QueueUrl), nil
}

func (e *env) deleteQueue(url string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.setup.sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
		log.Printf("delete queue %s: %v", url, err)
	}
}

// cleanup deletes the tables, once.
func (e *env) cleanup() {
	if e.cleaned {
		return
	}
	e.cleaned = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{e.tables.Context, e.tables.Status, e.tables.Coordination} {
		if name == "" {
			continue
		}
		_, err := e.setup.ddb.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
		var nf *ddbtypes.ResourceNotFoundException
		if err != nil && !errors.As(err, &nf) {
			log.Printf("delete table %s: %v", name, err)
		}
	}
}

func (e *env) adapter(r *role, id string, extra ...sqsadapter.Option) (*sqsadapter.SqsAdapter, error) {
	opts := []sqsadapter.Option{
		sqsadapter.WithSQSClient(r.sqs),
		sqsadapter.WithQueueURL(e.queueURL),
		sqsadapter.WithContextStore(sqsadapter.NewDynamoDbContext(r.ddb, e.tables.Context, e.tables.Status)),
		sqsadapter.WithCoordinationStore(sqsadapter.NewDynamoDbCoordinationStore(r.ddb, e.tables.Coordination)),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"step": step}),
		sqsadapter.WithBlueprints(e.bps...),
		sqsadapter.WithLogger(e.logger),
		sqsadapter.WithWorkerID(id),
	}
	return sqsadapter.NewSqsAdapter(append(opts, extra...)...)
}

// phase runs one blueprint runs times on a queue of its own and measures
// it. (A queue per phase: the long polls cancelled when a phase's workers
// stop must not take the next phase's messages.)
func (e *env) phase(ctx context.Context, queue string, s shape, contextBytes, runs, inflight int) (*result, error) {
	o := e.o
	url, err := e.createQueue(ctx, queue)
	if err != nil {
		return nil, err
	}
	e.queueURL = url
	defer e.deleteQueue(url)
	rec := newRecorder()
	current.Store(rec)
	defer current.Store(nil)
	for _, r := range []*role{e.workers, e.starter, e.poller} {
		r.counter.Reset()
		r.stats.reset()
		r.capacity.reset()
	}

	starter, err := e.adapter(e.starter, "bench-starter")
	if err != nil {
		return nil, err
	}
	poller, err := e.adapter(e.poller, "bench-poller")
	if err != nil {
		return nil, err
	}
	var workers []*sqsadapter.SqsAdapter
	runErrs := make(chan error, o.workers)
	for i := range o.workers {
		w, err := e.adapter(e.workers, fmt.Sprintf("bench-w%d", i),
			sqsadapter.WithConcurrency(o.concurrency),
			sqsadapter.WithWaitTime(o.waitTime),
			sqsadapter.WithTuning(sqsadapter.Tuning{ReceiveWindow: cmp.Or(o.receiveWindow, -1), DeleteLinger: cmp.Or(o.deleteLinger, -1), ChainNodes: cmp.Or(max(o.chainNodes, -1), -1), Retention: o.retention}),
		)
		if err != nil {
			return nil, err
		}
		workers = append(workers, w)
		go func() { runErrs <- w.Run(ctx) }()
	}
	stopWorkers := func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		var errs []error
		for _, w := range workers {
			errs = append(errs, w.Shutdown(sctx))
		}
		for range workers {
			errs = append(errs, <-runErrs)
		}
		workers = nil
		return errors.Join(errs...)
	}
	defer func() {
		if workers != nil {
			_ = stopWorkers()
		}
	}()

	var initial map[string]any
	if contextBytes > 0 {
		initial = map[string]any{"payload": strings.Repeat("x", contextBytes)}
	}
	prefix := "r" + strings.ToLower(rand.Text()[:6])
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	rctx, cancelRuns := context.WithCancel(ctx)
	defer cancelRuns()
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range runs {
			select {
			case next <- i:
			case <-rctx.Done():
				return
			}
		}
	}()
	var latMu sync.Mutex
	var clientLat []time.Duration
	cpu0 := processCPU()
	t0 := time.Now()
	for range min(inflight, runs) {
		wg.Go(func() {
			for i := range next {
				if rctx.Err() != nil {
					return
				}
				d, err := e.oneRun(rctx, starter, poller, rec, s, fmt.Sprintf("%s-%d", prefix, i), initial)
				if err != nil {
					fail(err)
					cancelRuns()
					return
				}
				latMu.Lock()
				clientLat = append(clientLat, d)
				latMu.Unlock()
			}
		})
	}
	wg.Wait()
	wall := time.Since(t0)
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := stopWorkers(); err != nil {
		return nil, fmt.Errorf("stop workers: %w", err)
	}
	cpu := processCPU() - cpu0

	r := &result{
		blueprint: s.id, contextBytes: contextBytes, runs: runs, nodes: runs * s.nodes, inflight: min(inflight, runs),
		executions: rec.executions.Load(), wall: wall, cpu: cpu, clientLat: clientLat,
		workers: e.workers.counter.Snapshot(), start: e.starter.counter.Snapshot(), poll: e.poller.counter.Snapshot(),
		sqsW: snap(e.workers.stats, e.starter.stats),
	}
	r.work = add(r.workers, r.start)
	wcap, scap := e.workers.capacity.snapshot(), e.starter.capacity.snapshot()
	n := float64(r.nodes)
	r.cuNodes = (wcap[e.tables.Context] + wcap[e.tables.Coordination]) / n
	r.cuRuns = (wcap[e.tables.Status] + scap[e.tables.Status]) / n
	r.cuInitial = (scap[e.tables.Context] + scap[e.tables.Coordination]) / n
	rec.mu.Lock()
	for k, st := range rec.started {
		runID, node, _ := strings.Cut(k, "/")
		if t, ok := rec.enqueued[k]; ok {
			r.enqueueLat = append(r.enqueueLat, st.Sub(t))
		}
		var ready time.Time
		if ps := s.preds[node]; len(ps) == 0 {
			ready = rec.runStart[runID]
		} else {
			for _, p := range ps {
				if f := rec.finished[runID+"/"+p]; f.After(ready) {
					ready = f
				}
			}
		}
		if !ready.IsZero() {
			r.readyLat = append(r.readyLat, st.Sub(ready))
		}
	}
	rec.mu.Unlock()
	r.leftover = e.queueDepth(ctx)
	return r, nil
}

// idleResult is what workers cost on an empty queue.
type idleResult struct {
	wall     time.Duration
	workers  int
	requests reqcount.RequestCounts
	empty    int64 // empty receives (held early answers excluded)
	early    int64 // early empty answers re-asked, uncounted
	cpu      time.Duration
}

// idlePhase runs the workers on an empty queue of their own for -idle and
// counts their requests, the last long polls (cancelled at shutdown)
// included.
func (e *env) idlePhase(ctx context.Context, queue string) (*idleResult, error) {
	url, err := e.createQueue(ctx, queue)
	if err != nil {
		return nil, err
	}
	e.queueURL = url
	defer e.deleteQueue(url)
	e.workers.counter.Reset()
	e.workers.stats.reset()
	cpu0 := processCPU()
	t0 := time.Now()
	var workers []*sqsadapter.SqsAdapter
	errs := make(chan error, e.o.workers)
	for i := range e.o.workers {
		w, err := e.adapter(e.workers, fmt.Sprintf("bench-idle-w%d", i), sqsadapter.WithConcurrency(e.o.concurrency), sqsadapter.WithWaitTime(e.o.waitTime))
		if err != nil {
			return nil, err
		}
		workers = append(workers, w)
		go func() { errs <- w.Run(ctx) }()
	}
	t := time.NewTimer(e.o.idle)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var all []error
	for _, w := range workers {
		all = append(all, w.Shutdown(sctx))
	}
	for range workers {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		return nil, err
	}
	return &idleResult{
		wall: time.Since(t0), workers: len(workers), requests: e.workers.counter.Snapshot(),
		empty: e.workers.stats.emptyReceives.Load(), early: e.workers.stats.earlyEmpty.Load(), cpu: processCPU() - cpu0,
	}, ctx.Err()
}

// oneRun starts a run and waits for it with WaitForRun, called at once, as
// a client would. It returns the time from calling StartRun to WaitForRun's
// return (the client-observed latency).
func (e *env) oneRun(ctx context.Context, starter, poller *sqsadapter.SqsAdapter, rec *recorder, s shape, runID string, initial map[string]any) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, e.o.runTimeout)
	defer cancel()
	t0 := time.Now()
	rec.expect(runID, t0)
	if _, err := starter.StartRun(ctx, s.id, initial, sqsadapter.WithRunID(runID)); err != nil {
		return 0, err
	}
	st, err := poller.WaitForRun(ctx, runID)
	if err != nil {
		return 0, fmt.Errorf("wait for run %s: %w", runID, err)
	}
	d := time.Since(t0)
	if st.Status != sqsadapter.StatusCompleted {
		return 0, fmt.Errorf("run %s: %s: %s", runID, st.Status, st.Error)
	}
	return d, nil
}

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// queueDepth is the number of messages left in the queue (visible or not).
func (e *env) queueDepth(ctx context.Context) int {
	out, err := e.setup.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(e.queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return -1
	}
	n := 0
	for _, v := range out.Attributes {
		i, _ := strconv.Atoi(v)
		n += i
	}
	return n
}

func add(cs ...reqcount.RequestCounts) reqcount.RequestCounts {
	sum := reqcount.RequestCounts{Requests: map[string]int64{}}
	for _, c := range cs {
		for k, v := range c.Requests {
			sum.Requests[k] += v
		}
		sum.ReadCapacityUnits += c.ReadCapacityUnits
		sum.WriteCapacityUnits += c.WriteCapacityUnits
	}
	return sum
}

// ---------------------------------------------------------------------------
// Report

func perNode(v int64, r *result) float64 { return float64(v) / float64(r.nodes) }

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s)) + 0.5)
	return s[min(max(i, 1), len(s))-1]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

func label(r *result) string {
	l := fmt.Sprintf("%s@%d", r.blueprint, r.inflight)
	if r.contextBytes == 0 {
		return l
	}
	return fmt.Sprintf("%s ctx %s", l, kb(r.contextBytes))
}

// allIn is every request a user pays for, per node: the workers' (empty
// and cancelled long polls included), StartRun's and one WaitForRun per run.
func allIn(r *result) float64 { return perNode(r.work.Total()+r.poll.Total(), r) }

func cpuPerNode(r *result) float64 {
	return float64(r.cpu) / float64(time.Millisecond) / float64(r.nodes)
}

// workerCPUPerNode estimates the workers' share of the process CPU time
// per node: the process CPU time split in proportion to the SDK calls
// made (the workers', StartRun's, WaitForRun's, and the uncounted re-asks
// of early empty answers), since SDK calls dominate the CPU profile. It is
// an estimate, not a measurement.
func workerCPUPerNode(r *result) float64 {
	all := r.workers.Total() + r.start.Total() + r.poll.Total() + r.sqsW.earlyEmpty
	if all == 0 {
		return 0
	}
	return cpuPerNode(r) * float64(r.workers.Total()) / float64(all)
}

// The TypeScript adapter on the same emulators (ts-baseline.md): worker
// requests per node on diamond runs (empty receives excluded), nodes/s on
// 100 concurrent diamond runs, worker CPU per node, client p50 of
// sequential diamond and chain10 runs.
const (
	tsRequestsPerNode = 13.0
	tsNodesPerSecond  = 100.0
	tsCPUPerNode      = 9.2 // ms
	tsDiamondP50      = 76  // ms
	tsChain10P50      = 139 // ms
)

func kb(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func report(out io.Writer, o options, held bool, results []*result, idle *idleResult) {
	fmt.Fprintf(out, "# %d workers × concurrency %d, receive window %v, delete linger %v, chain nodes %d, retention %v, long poll %v, early-empty long polls held: %v; blueprint@N: N runs in flight\n\n",
		o.workers, o.concurrency, o.receiveWindow, o.deleteLinger, o.chainNodes, o.retention, o.waitTime, held)

	fmt.Fprintln(out, "## As a user pays (per executed node: workers, empty and cancelled long polls included; StartRun; one WaitForRun per run)")
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| blueprint\t runs\t nodes/s\t client p50/p95 ms\t workers\t StartRun\t WaitForRun\t **all-in req/node**\t of which empty receives\t process CPU ms/node\t workers' share ms/node\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range results {
		fmt.Fprintf(tw, "| %s\t %d\t %.0f\t %s / %s\t %.3f\t %.3f\t %.3f\t **%.3f**\t %.3f\t %.2f\t %.2f\t\n",
			label(r), r.runs, float64(r.nodes)/r.wall.Seconds(),
			ms(percentile(r.clientLat, .5)), ms(percentile(r.clientLat, .95)),
			perNode(r.workers.Total(), r), perNode(r.start.Total(), r), perNode(r.poll.Total(), r), allIn(r),
			perNode(r.sqsW.emptyReceives, r), cpuPerNode(r), workerCPUPerNode(r))
	}
	tw.Flush()
	fmt.Fprintln(out)
	if held {
		fmt.Fprint(out, "Early empty answers of the emulator re-asked, uncounted (SQS does not give them), per node:")
		for _, r := range results {
			fmt.Fprintf(out, " %s %.3f;", label(r), perNode(r.sqsW.earlyEmpty, r))
		}
		fmt.Fprint(out, "\n\n")
	}
	if idle != nil {
		hours := idle.wall.Hours()
		per := float64(idle.requests.Total()) / float64(idle.workers) / hours
		fmt.Fprintf(out, "Idle: %d workers on an empty queue for %v: %d requests (%s), %d empty receives; %.0f requests per worker per hour ($%.6f at $0.40 per million SQS requests); process CPU %.1f ms per worker per hour\n\n",
			idle.workers, idle.wall.Round(time.Millisecond), idle.requests.Total(), strings.Join(opCounts(idle.requests), ", "), idle.empty,
			per, per*0.40e-6, float64(idle.cpu)/float64(time.Millisecond)/float64(idle.workers)/hours)
	}

	fmt.Fprintln(out, "## Per blueprint (per-node figures include StartRun, exclude WaitForRun polling)")
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| blueprint\t runs\t nodes\t executed\t wall s\t nodes/s\t enq→start p50/p99 ms\t ready→start p50/p99 ms\t SQS req/node\t DDB req/node\t total req/node\t RCU/node\t WCU/node\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range results {
		fmt.Fprintf(tw, "| %s\t %d\t %d\t %d\t %.2f\t %.0f\t %s / %s\t %s / %s\t %.3f\t %.3f\t %.3f\t %.3f\t %.3f\t\n",
			label(r), r.runs, r.nodes, r.executions, r.wall.Seconds(), float64(r.nodes)/r.wall.Seconds(),
			ms(percentile(r.enqueueLat, .5)), ms(percentile(r.enqueueLat, .99)),
			ms(percentile(r.readyLat, .5)), ms(percentile(r.readyLat, .99)),
			perNode(r.work.Service("SQS"), r), perNode(r.work.Service("DynamoDB"), r), perNode(r.work.Total(), r),
			r.work.ReadCapacityUnits/float64(r.nodes), r.work.WriteCapacityUnits/float64(r.nodes))
	}
	tw.Flush()
	fmt.Fprintln(out)

	// Requests per node by operation.
	ops := map[string]bool{}
	for _, r := range results {
		for k := range r.work.Requests {
			ops[k] = true
		}
	}
	opList := make([]string, 0, len(ops))
	for k := range ops {
		opList = append(opList, k)
	}
	slices.Sort(opList)
	fmt.Fprintln(out, "## Requests per node by operation (workers + StartRun)")
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprint(tw, "| operation\t")
	for _, r := range results {
		fmt.Fprintf(tw, " %s\t", label(r))
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, "|---\t")
	for range results {
		fmt.Fprint(tw, "---\t")
	}
	fmt.Fprintln(tw)
	for _, op := range opList {
		fmt.Fprintf(tw, "| %s\t", op)
		for _, r := range results {
			fmt.Fprintf(tw, " %.3f\t", perNode(r.work.Requests[op], r))
		}
		fmt.Fprintln(tw)
	}
	row := func(name string, f func(r *result) string) {
		fmt.Fprintf(tw, "| %s\t", name)
		for _, r := range results {
			fmt.Fprintf(tw, " %s\t", f(r))
		}
		fmt.Fprintln(tw)
	}
	row("**total**", func(r *result) string { return fmt.Sprintf("**%.3f**", perNode(r.work.Total(), r)) })
	row("of which StartRun", func(r *result) string { return fmt.Sprintf("%.3f", perNode(r.start.Total(), r)) })
	row("RCU (workers / StartRun)", func(r *result) string {
		return fmt.Sprintf("%.3f / %.3f", r.workers.ReadCapacityUnits/float64(r.nodes), r.start.ReadCapacityUnits/float64(r.nodes))
	})
	row("WCU (workers / StartRun)", func(r *result) string {
		return fmt.Sprintf("%.3f / %.3f", r.workers.WriteCapacityUnits/float64(r.nodes), r.start.WriteCapacityUnits/float64(r.nodes))
	})
	row("RCU+WCU/node: node records + joins", func(r *result) string { return fmt.Sprintf("%.3f", r.cuNodes) })
	row("RCU+WCU/node: run records", func(r *result) string { return fmt.Sprintf("%.3f", r.cuRuns) })
	row("RCU+WCU/node: initial context", func(r *result) string { return fmt.Sprintf("%.3f", r.cuInitial) })
	row("messages per receive", func(r *result) string {
		return fmt.Sprintf("%.2f", float64(r.sqsW.received)/float64(max(r.sqsW.receives, 1)))
	})
	row("empty receives", func(r *result) string { return strconv.FormatInt(r.sqsW.emptyReceives, 10) })
	if held {
		row("early empty polls re-asked (uncounted)", func(r *result) string { return strconv.FormatInt(r.sqsW.earlyEmpty, 10) })
	}
	row("requests: workers / StartRun", func(r *result) string { return fmt.Sprintf("%d / %d", r.workers.Total(), r.start.Total()) })
	row("entries per send batch", func(r *result) string {
		return fmt.Sprintf("%.2f", float64(r.sqsW.sentEntries)/float64(max(r.sqsW.sendBatches, 1)))
	})
	row("entries per delete batch", func(r *result) string {
		return fmt.Sprintf("%.2f", float64(r.sqsW.deletedEntries)/float64(max(r.sqsW.deleteBatches, 1)))
	})
	tw.Flush()
	fmt.Fprintln(out)

	fmt.Fprintln(out, "## WaitForRun polling (not in the per-node figures)")
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| blueprint\t requests/run\t by operation\t RCU/run\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t")
	for _, r := range results {
		var parts []string
		for _, op := range r.poll.Operations() {
			parts = append(parts, fmt.Sprintf("%s %.2f", op, float64(r.poll.Requests[op])/float64(r.runs)))
		}
		fmt.Fprintf(tw, "| %s\t %.2f\t %s\t %.2f\t\n", label(r), float64(r.poll.Total())/float64(r.runs), strings.Join(parts, ", "), r.poll.ReadCapacityUnits/float64(r.runs))
	}
	tw.Flush()
	fmt.Fprintln(out)

	// Acceptance figures.
	fmt.Fprintln(out, "## Acceptance figures")
	fmt.Fprintln(out)
	find := func(bp string, cb int) *result {
		for _, r := range results {
			if r.blueprint == bp && r.contextBytes == cb {
				return r
			}
		}
		return nil
	}
	cu := func(r *result) float64 {
		return (r.work.ReadCapacityUnits + r.work.WriteCapacityUnits) / float64(r.nodes)
	}
	req := func(r *result) float64 { return perNode(r.work.Total(), r) }
	// compare prints b against a: requests per node, capacity units per
	// node of node records and joins, and all capacity units per node.
	compare := func(what string, a, b *result) {
		rr, nr, cr := req(b)/req(a), b.cuNodes/a.cuNodes, cu(b)/cu(a)
		fmt.Fprintf(out, "- %s: requests/node %.3f / %.3f = %.3f (%s); "+
			"RCU+WCU/node of node records and joins %.3f / %.3f = %.3f (%s); "+
			"all RCU+WCU/node, with run records and initial context %.3f / %.3f = %.3f (%s)\n",
			what, req(b), req(a), rr, verdict(within(rr, 0.1)),
			b.cuNodes, a.cuNodes, nr, verdict(within(nr, 0.1)),
			cu(b), cu(a), cr, verdict(within(cr, 0.1)))
	}
	// at finds the phase of a blueprint, without initial context, whose
	// runs in flight satisfy ok.
	at := func(bp string, ok func(inflight int) bool) *result {
		for _, r := range results {
			if r.blueprint == bp && r.contextBytes == 0 && ok(r.inflight) {
				return r
			}
		}
		return nil
	}
	low := func(k int) bool { return k > 1 && k <= 10 }
	high := func(k int) bool { return k >= 100 }
	sequential := func(k int) bool { return k == 1 }
	if c10, f10 := at("chain10", low), at("fanout10", low); c10 != nil && f10 != nil {
		avg := (allIn(c10) + allIn(f10)) / 2
		fmt.Fprintf(out, "- low load, all in: chain10 + fanout10 average %.3f requests per node (chain10@%d %.3f, fanout10@%d %.3f) — target 3.2: %s; chain10 target 2.5: %s\n",
			avg, c10.inflight, allIn(c10), f10.inflight, allIn(f10), verdict(avg <= 3.2), verdict(allIn(c10) <= 2.5))
	}
	for _, r := range results {
		if r.contextBytes == 0 && high(r.inflight) {
			fmt.Fprintf(out, "- high load, all in: %s %.3f requests per node — target 3.0: %s\n", label(r), allIn(r), verdict(allIn(r) <= 3.0))
		}
	}
	if d := at("diamond", high); d != nil {
		nps := float64(d.nodes) / d.wall.Seconds()
		cpu, wcpu := cpuPerNode(d), workerCPUPerNode(d)
		fmt.Fprintf(out, "- against the TypeScript adapter (%s): %.0f nodes/s = %.1f× its %.0f (target 4×: %s); worker requests per node %.3f = %.2f× its %.1f (all in: %.3f); CPU per node %.2f ms for the process, %.2f ms the workers' estimated share = %.2f× its %.1f ms worker CPU\n",
			label(d), nps, nps/tsNodesPerSecond, tsNodesPerSecond, verdict(nps >= 4*tsNodesPerSecond),
			perNode(d.workers.Total(), d), perNode(d.workers.Total(), d)/tsRequestsPerNode, tsRequestsPerNode, allIn(d),
			cpu, wcpu, wcpu/tsCPUPerNode, tsCPUPerNode)
	}
	for _, c := range []struct {
		bp     string
		ts     float64
		target float64
	}{{"diamond", tsDiamondP50, 0}, {"chain10", tsChain10P50, 25}} {
		r := at(c.bp, sequential)
		if r == nil {
			continue
		}
		p50 := float64(percentile(r.clientLat, .5)) / float64(time.Millisecond)
		line := fmt.Sprintf("- sequential %s runs, client-observed p50 %.1f ms = %.2f× the TypeScript adapter's %.0f ms", c.bp, p50, p50/c.ts, c.ts)
		if c.target > 0 {
			line += fmt.Sprintf(" (target %.0f ms: %s)", c.target, verdict(p50 <= c.target))
		}
		fmt.Fprintln(out, line)
	}
	for _, cb := range o.contextBytes {
		c10, f10 := find("chain10", cb), find("fanout10", cb)
		if c10 != nil && f10 != nil {
			avg := (req(c10) + req(f10)) / 2
			pooled := float64(c10.work.Total()+f10.work.Total()) / float64(c10.nodes+f10.nodes)
			fmt.Fprintf(out, "- chain10 + fanout10 average requests per node without WaitForRun (context %s): %.3f (chain10 %.3f, fanout10 %.3f; pooled %.3f) — first budget 4.0: %s\n",
				kb(cb), avg, req(c10), req(f10), pooled, verdict(avg <= 4.0))
		}
		if c100 := find("chain100", cb); c10 != nil && c100 != nil {
			compare(fmt.Sprintf("chain100 / chain10 (context %s), within 10%%", kb(cb)), c10, c100)
		}
	}
	if len(o.contextBytes) >= 2 {
		lo, hi := slices.Min(o.contextBytes), slices.Max(o.contextBytes)
		for _, p := range o.blueprints {
			a, b := find(p.name, lo), find(p.name, hi)
			if a == nil || b == nil || a == b {
				continue
			}
			compare(fmt.Sprintf("%s context %s / %s, within 10%%", p.name, kb(hi), kb(lo)), a, b)
		}
	}
	for _, r := range results {
		if r.executions != int64(r.nodes) {
			fmt.Fprintf(out, "- note: %s executed %d node functions for %d nodes (re-executions after redelivery)\n", label(r), r.executions, r.nodes)
		}
		if r.leftover != 0 {
			fmt.Fprintf(out, "- note: %d messages were left in the queue after %s\n", r.leftover, label(r))
		}
	}
}

// opCounts lists the operations of c with their counts.
func opCounts(c reqcount.RequestCounts) []string {
	var parts []string
	for _, op := range c.Operations() {
		parts = append(parts, fmt.Sprintf("%s %d", op, c.Requests[op]))
	}
	return parts
}

func within(ratio, tol float64) bool { return ratio >= 1-tol && ratio <= 1+tol }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}
