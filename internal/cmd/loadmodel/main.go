// Command loadmodel replays a request trace (examples/bench -trace, see
// internal/reqtrace) and reports what each DynamoDB key and SQS queue bears:
// capacity units per second on every item, partition key value and
// partition of the running-runs index, and messages in flight per queue;
// the hottest of each, and the same projected to a target load. See
// docs/scale.md for the arithmetic it supports.
//
//	go run ./examples/bench -warmup 0 -runs 200 -blueprints chain10,fanout10 -trace /tmp/trace.jsonl
//	go run ./internal/cmd/loadmodel -trace /tmp/trace.jsonl
//
// Units, as DynamoDB bills an item of at most 1 KB (writes) or 4 KB
// (reads), which the bench's items are: a write is 1 write unit (2 in a
// transaction), a strongly consistent read 1 read unit (2 in a
// transaction), a Query 1 read unit on its partition. Every write of a run
// record (the status table, found by its name's suffix -status) also
// writes the run's partition of the running-runs index: CreateRun puts the
// run in it, FinishRun takes it out, and the index projects every
// attribute, so the waiting-set changes of a running run write it too.
// -index-shards sets how many partition key values that index has (16 now;
// 1 models the single value "running" of earlier versions).
//
// Messages in flight are those received and not yet deleted, per queue:
// SQS allows 120,000 on a standard queue.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/flowcraft/sqsadapter/internal/reqtrace"
	"github.com/flowcraft/sqsadapter/internal/runindex"
)

// AWS limits (docs/scale.md cites them).
const (
	partitionWCU   = 1000   // write units per second per partition
	queueInFlight  = 120000 // in-flight messages per standard queue
	maxTraceLines  = 50_000_000
	maxLineBytes   = 1 << 20
	indexTableName = "(running-runs index)"
)

func main() {
	trace := flag.String("trace", "", "trace file (JSON lines of examples/bench -trace); - for stdin")
	shards := flag.Int("index-shards", runindex.Shards, "partition key values of the running-runs index (1: the single value of earlier versions)")
	top := flag.Int("top", 5, "keys listed per kind")
	target := flag.Float64("target", 10000, "nodes per second to project the shared keys to (0: no projection)")
	flag.Parse()
	if *trace == "" || *shards < 1 || *top < 1 || *target < 0 {
		fmt.Fprintln(os.Stderr, "usage: loadmodel -trace FILE [-index-shards N] [-top K] [-target NODES_PER_S]")
		os.Exit(2)
	}
	in := io.Reader(os.Stdin)
	if *trace != "-" {
		f, err := os.Open(*trace)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadmodel:", err)
			os.Exit(1)
		}
		defer f.Close()
		in = f
	}
	m, err := analyze(in, *shards)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadmodel:", err)
		os.Exit(1)
	}
	m.print(os.Stdout, *top, *target)
}

// rate is the load on one key: units per one-second bin.
type rate struct {
	bins  map[int64]float64
	total float64
}

func (r *rate) add(t float64, units float64) {
	if r.bins == nil {
		r.bins = map[int64]float64{}
	}
	r.bins[int64(math.Floor(t))] += units
	r.total += units
}

func (r *rate) peak() float64 {
	p := 0.0
	for _, v := range r.bins {
		p = max(p, v)
	}
	return p
}

// kind classifies a key by what the design stores under it.
type kind string

const (
	kindRun     kind = "run record"
	kindNode    kind = "node record"
	kindContext kind = "context key"
	kindRunPart kind = "run context partition"
	kindCoord   kind = "coordination (joins)"
	kindIndex   kind = "running-runs index partition"
	kindOther   kind = "other"
)

type keyLoad struct {
	kind        kind
	name        string
	write, read rate
}

// model is what a trace replays to.
type model struct {
	shards     int
	requests   int
	first      float64
	last       float64
	items      map[string]*keyLoad // table|pk|sk
	partitions map[string]*keyLoad // table|pk (and the index partitions)
	queues     map[string]*queueLoad
	phases     []reqtrace.Phase
}

type queueLoad struct {
	name                    string
	sent, received, deleted rate
	inFlight, peakInFlight  int
	receives, emptyReceives int
	requests                int
	peakInFlightT           float64
}

func analyze(r io.Reader, shards int) (*model, error) {
	m := &model{shards: shards, items: map[string]*keyLoad{}, partitions: map[string]*keyLoad{}, queues: map[string]*queueLoad{}, first: math.Inf(1), last: math.Inf(-1)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLineBytes)
	for line := 1; sc.Scan(); line++ {
		if line > maxTraceLines {
			return nil, fmt.Errorf("more than %d lines", maxTraceLines)
		}
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var rec reqtrace.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		m.add(rec)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if m.requests == 0 {
		return nil, errors.New("no requests in the trace")
	}
	return m, nil
}

func (m *model) add(rec reqtrace.Record) {
	if rec.Phase != nil {
		m.phases = append(m.phases, *rec.Phase)
		return
	}
	m.requests++
	m.first, m.last = min(m.first, rec.T), max(m.last, rec.T)
	switch rec.Svc {
	case "DynamoDB":
		for _, a := range rec.Items {
			m.access(rec.T, a)
		}
	case "SQS":
		m.message(rec)
	}
}

func (m *model) access(t float64, a reqtrace.Access) {
	units := 1.0
	if a.Tx {
		units = 2
	}
	k := kindOf(a)
	load := func(set map[string]*keyLoad, name string, k kind) *keyLoad {
		l := set[name]
		if l == nil {
			l = &keyLoad{kind: k, name: name}
			set[name] = l
		}
		return l
	}
	part := a.Table + " " + a.PK
	if a.Index != "" {
		part = a.Table + "/" + a.Index + " " + a.PK
	}
	pk := k
	if a.SK != "" {
		pk = kindRunPart // a run's items of the context table share its partition key value
	}
	pl := load(m.partitions, part, pk)
	if a.SK == "" && a.Index == "" {
		// A whole-partition key (status, coordination table) is its item.
		if a.Write {
			pl.write.add(t, units)
		} else {
			pl.read.add(t, units)
		}
	} else {
		il := load(m.items, part+" "+a.SK, k)
		if a.Write {
			il.write.add(t, units)
			pl.write.add(t, units)
		} else {
			il.read.add(t, units)
			pl.read.add(t, units)
		}
	}
	if a.Write && k == kindRun {
		// The run's partition of the running-runs index.
		s := runindex.ShardOf(a.PK, m.shards)
		value := runindex.Legacy
		if m.shards > 1 {
			value = fmt.Sprintf("%s#%d", runindex.Legacy, s)
		}
		il := m.partitions[indexTableName+" "+value]
		if il == nil {
			il = &keyLoad{kind: kindIndex, name: indexTableName + " " + value}
			m.partitions[il.name] = il
		}
		il.write.add(t, 1)
	}
}

func kindOf(a reqtrace.Access) kind {
	switch {
	case a.Index != "":
		return kindIndex
	case strings.HasSuffix(a.Table, "-status"):
		return kindRun
	case strings.HasSuffix(a.Table, "-coordination"):
		return kindCoord
	case strings.HasSuffix(a.Table, "-context") && strings.HasPrefix(a.SK, "_outputs."):
		return kindNode
	case strings.HasSuffix(a.Table, "-context"):
		return kindContext
	}
	return kindOther
}

func (m *model) message(rec reqtrace.Record) {
	q := m.queues[rec.Queue]
	if q == nil {
		q = &queueLoad{name: rec.Queue}
		m.queues[rec.Queue] = q
	}
	q.requests++
	switch rec.Op {
	case "SendMessage", "SendMessageBatch":
		q.sent.add(rec.T, float64(rec.N))
	case "ReceiveMessage":
		q.receives++
		if rec.N == 0 {
			q.emptyReceives++
		}
		q.received.add(rec.T, float64(rec.N))
		q.inFlight += rec.N
	case "DeleteMessage", "DeleteMessageBatch":
		q.deleted.add(rec.T, float64(rec.N))
		q.inFlight -= rec.N
	}
	// Records are written when requests end, roughly in time order: the
	// in-flight count is a running sum.
	if q.inFlight > q.peakInFlight {
		q.peakInFlight, q.peakInFlightT = q.inFlight, rec.T
	}
}

// nodesPerSecond is the phases' executed nodes over their summed duration.
func (m *model) nodesPerSecond() (nodes int, perSecond float64) {
	secs := 0.0
	for _, p := range m.phases {
		nodes += p.Nodes
		secs += p.End - p.Start
	}
	if secs <= 0 {
		return nodes, 0
	}
	return nodes, float64(nodes) / secs
}

func (m *model) duration() float64 { return max(m.last-m.first, 1) }

func (m *model) print(w io.Writer, top int, target float64) {
	nodes, nps := m.nodesPerSecond()
	fmt.Fprintf(w, "trace: %d requests over %.1f s; %d phases, %d nodes executed, %.0f nodes/s; index shards modelled: %d\n",
		m.requests, m.duration(), len(m.phases), nodes, nps, m.shards)
	fmt.Fprintln(w, "units: a write 1 WCU (2 in a transaction), a read 1 RCU (2 in a transaction); peak = busiest 1-second bin")

	fmt.Fprintln(w, "\nhottest per kind (partition key values; items of the context table separately):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tkeys\tpeak WCU/s\tmean WCU/s\tpeak RCU/s\thottest key")
	byKind := map[kind][]*keyLoad{}
	for _, l := range m.partitions {
		byKind[l.kind] = append(byKind[l.kind], l)
	}
	for _, l := range m.items {
		byKind[l.kind+" (item)"] = append(byKind[l.kind+" (item)"], l)
	}
	for _, k := range slices.Sorted(maps.Keys(byKind)) {
		ls := byKind[k]
		hot := hottest(ls)
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.0f\t%s\n", k, len(ls), hot.write.peak(), hot.write.total/m.duration(), peakRead(ls), hot.name)
	}
	tw.Flush()

	fmt.Fprintf(w, "\ntop %d partition key values by peak write units per second:\n", top)
	all := slices.Collect(maps.Values(m.partitions))
	slices.SortFunc(all, func(a, b *keyLoad) int {
		return cmp.Or(cmp.Compare(b.write.peak(), a.write.peak()), strings.Compare(a.name, b.name))
	})
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "peak WCU/s\tmean WCU/s\tpeak RCU/s\tkind\tkey")
	for _, l := range all[:min(top, len(all))] {
		fmt.Fprintf(tw, "%.0f\t%.2f\t%.0f\t%s\t%s\n", l.write.peak(), l.write.total/m.duration(), l.read.peak(), l.kind, l.name)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nSQS queues:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "queue\trequests\tsent/s peak\treceived/s peak\tpeak in flight\tempty receives")
	for _, name := range slices.Sorted(maps.Keys(m.queues)) {
		q := m.queues[name]
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%d\t%d of %d\n", name, q.requests, q.sent.peak(), q.received.peak(), q.peakInFlight, q.emptyReceives, q.receives)
	}
	tw.Flush()

	if target <= 0 || nps <= 0 {
		return
	}
	scale := target / nps
	fmt.Fprintf(w, "\nprojected to %.0f nodes/s (×%.1f; the same blueprints and run lengths):\n", target, scale)
	fmt.Fprintln(w, "  per-run keys (run record, node records, context keys, joins) keep their rates: they follow one run's shape, not the load")
	idx := byKind[kindIndex]
	if len(idx) > 0 {
		var sum float64
		for _, l := range idx {
			sum += l.write.total
		}
		mean := sum / m.duration() * scale
		per := mean / float64(m.shards)
		fmt.Fprintf(w, "  running-runs index: %.0f WCU/s in all, %.0f per partition key value over %d (limit %d per partition): %s\n",
			mean, per, m.shards, partitionWCU, verdict(per, partitionWCU))
		fmt.Fprintf(w, "    the index saturates at %.0f nodes/s with these blueprints\n", float64(partitionWCU)*float64(m.shards)/(sum/m.duration())*nps)
	}
	for _, name := range slices.Sorted(maps.Keys(m.queues)) {
		q := m.queues[name]
		if q.peakInFlight == 0 {
			continue
		}
		proj := float64(q.peakInFlight) * scale
		fmt.Fprintf(w, "  queue %s: %.0f messages in flight (limit %d): %s\n", name, proj, queueInFlight, verdict(proj, queueInFlight))
	}
}

func verdict(v, limit float64) string {
	if v >= limit {
		return "OVER the limit"
	}
	return fmt.Sprintf("%.1f%% of the limit", 100*v/limit)
}

func hottest(ls []*keyLoad) *keyLoad {
	return slices.MaxFunc(ls, func(a, b *keyLoad) int {
		return cmp.Or(cmp.Compare(a.write.peak(), b.write.peak()), cmp.Compare(a.write.total, b.write.total), strings.Compare(b.name, a.name))
	})
}

func peakRead(ls []*keyLoad) float64 {
	p := 0.0
	for _, l := range ls {
		p = max(p, l.read.peak())
	}
	return p
}
