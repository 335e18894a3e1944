package sqsadapter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// Stray and forged jobs. Once a run has finished, every job that names it
// is stray: a late duplicate, a job for a node that was skipped or never
// reached, a job naming a node its blueprint lacks, another blueprint, or
// a version the worker lacks. The bad-input table of docs/semantics.md gives each its
// outcome:
//
//   - a node of the run's blueprint, or a node id it lacks (a fallback-only
//     node, another blueprint's node, a fallback record's name): the run is
//     finished, so the job is dropped without running; message deleted;
//   - another registered blueprint's id: trusted by default (the library's
//     own jobs never do that, and checking costs a read per node), so such
//     jobs are sent only to the WithRunCheck adapter, which refuses them
//     and leaves them for the dead-letter queue;
//   - a blueprint or a version the worker lacks: left for the dead-letter
//     queue.
//
// And whatever the job: no node function runs, nothing panics, the run's
// status and context do not change, and the worker goes on.
//
// Each job goes through HandleJob of a stray adapter (sharing the stores,
// with its own registry, so that a node function it runs is seen), then
// as a raw message to that adapter's own queue, where its poller handles
// it; in the end those queues are empty and their dead-letter queues hold
// exactly the jobs the table sends there. Half the runs get an adapter with
// WithRunCheck.

type protoStrays struct {
	s     *protoSession
	sqs   *sqsadaptertest.SQS // the stray queues' own, which duplicates nothing
	calls *protoCalls         // node functions entered while handling stray jobs
	rigs  []*protoStrayRig
	bps   []*sqsadapter.Blueprint
	ids   map[string]bool // every node id of every blueprint
	runs  []*protoRun     // runs that got stray jobs
}

// protoStrayRig is a stray adapter with its queue and dead-letter queue.
type protoStrayRig struct {
	name    string
	checked bool // WithRunCheck
	a       *sqsadapter.SqsAdapter
	queue   string
	dlq     string
	wantDLQ int // raw messages the table sends to the dead-letter queue
}

// protoStray is one stray job and the outcome the table gives it.
type protoStray struct {
	job  sqsadapter.Job
	what string
	dlq  bool // left for the dead-letter queue (HandleJob returns ErrUnknownBlueprint)
	// raw: also sent as a message. Not for a node id that some blueprint
	// has, under a blueprint that lacks it: the HandleJob before can make
	// the difference between handling it and crashing a worker.
	raw bool
}

func newProtoStrays(s *protoSession, bps []*sqsadapter.Blueprint) *protoStrays {
	t, e := s.t, s.e
	p := &protoStrays{s: s, sqs: sqsadaptertest.NewSQS(), calls: &protoCalls{n: map[string]int{}, obs: e.obs}, bps: bps, ids: map[string]bool{}}
	for _, bp := range bps {
		for _, d := range bp.Nodes {
			p.ids[d.ID] = true
		}
	}
	for _, checked := range []bool{false, true} {
		rig := &protoStrayRig{name: "strays-plain", checked: checked}
		if checked {
			rig.name = "strays-checked"
		}
		rig.dlq = p.sqs.CreateQueue(rig.name+"-dlq", protoStrayQueue(0, ""))
		rig.queue = p.sqs.CreateQueue(rig.name, protoStrayQueue(5, rig.dlq))
		opts := []sqsadapter.Option{
			sqsadapter.WithWorkerID(rig.name),
			sqsadapter.WithSQSClient(p.sqs), sqsadapter.WithQueueURL(rig.queue),
			sqsadapter.WithContextStore(&protoContexts{inner: e.contexts, f: &protoFaults{}, obs: e.obs}),
			sqsadapter.WithCoordinationStore(e.coordinations),
			sqsadapter.WithRegistry(p.calls.registry()), sqsadapter.WithBlueprints(bps...),
			sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit),
			sqsadapter.WithVisibilityTimeout(protoStrayVisibility), sqsadapter.WithWaitTime(2 * unit), sqsadapter.WithTuning(sqsadapter.Tuning{PollBackoffMin: unit, PollBackoffMax: 5 * unit}),
			// As every worker of the session: a stray job that writes a
			// record of a finished run sets the run's expiry again.
			sqsadapter.WithTuning(sqsadapter.Tuning{Retention: e.retention}),
		}
		if checked {
			opts = append(opts, sqsadapter.WithRunCheck())
		}
		var err error
		rig.a, err = sqsadapter.NewSqsAdapter(opts...)
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() { errc <- rig.a.Run(context.Background()) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := rig.a.Shutdown(ctx); err != nil {
				t.Errorf("shut down %s: %v", rig.name, err)
			}
			if err := <-errc; err != nil && !errors.Is(err, sqsadapter.ErrAdapterClosed) {
				t.Errorf("%s: Run: %v", rig.name, err)
			}
		})
		// Bodies that are no job at all: left for the dead-letter queue.
		for _, body := range []string{`{"runId": `, `{"runId":"x","nodeId":"y"}`} {
			_, err := p.sqs.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(rig.queue), MessageBody: aws.String(body)})
			require.NoError(t, err)
			rig.wantDLQ++
		}
		p.rigs = append(p.rigs, rig)
	}
	return p
}

// protoStrayVisibility is the stray queues' visibility timeout: short, so
// that the jobs the table dead-letters get there soon, but long enough
// that a loaded machine handles and deletes a dropped job before it turns
// visible again (at 5 units, some were received five times and
// dead-lettered).
const protoStrayVisibility = 25 * unit

func protoStrayQueue(maxReceives int, dlq string) sqsadaptertest.QueueOptions {
	return sqsadaptertest.QueueOptions{VisibilityTimeout: protoStrayVisibility, VisibilityUnit: unit, MaxReceiveCount: maxReceives, DeadLetterQueueURL: dlq}
}

// jobs lists the stray jobs of finished run r.
func (p *protoStrays) jobs(r *protoRun, rng *rand.Rand, checked bool) []protoStray {
	bp, version, runID := r.c.bp, r.c.bp.Version(), r.runID
	var out []protoStray
	add := func(bpID, nodeID, v, what string, dlq, raw bool) {
		out = append(out, protoStray{job: sqsadapter.Job{RunID: runID, BlueprintID: bpID, NodeID: nodeID, BlueprintVersion: v}, what: what, dlq: dlq, raw: raw})
	}
	mine := map[string]bool{}
	for _, d := range bp.Nodes {
		mine[d.ID] = true
	}
	var others []*sqsadapter.Blueprint
	for _, q := range p.bps {
		if q.ID != bp.ID {
			others = append(others, q)
		}
	}
	rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	others = others[:min(2, len(others))]

	// Another blueprint's nodes under that blueprint's id (first, so that
	// a node they commit in this run is there for the jobs below). Only
	// with WithRunCheck: without it such jobs are trusted (docs/semantics.md, bad
	// input), and may run on the run.
	for _, q := range others {
		if !checked {
			break
		}
		for _, i := range rng.Perm(len(q.Nodes))[:min(2, len(q.Nodes))] {
			add(q.ID, q.Nodes[i].ID, q.Version(), fmt.Sprintf("node %q of blueprint %q, under that blueprint", q.Nodes[i].ID, q.ID), checked, true)
		}
	}
	// Every node of the run's blueprint.
	fbOnly := protoFallbackOnly(bp)
	for _, d := range bp.Nodes {
		state := string(r.exp.States[d.ID])
		if fbOnly[d.ID] {
			state = "fallback-only"
		}
		add(bp.ID, d.ID, version, fmt.Sprintf("node %q (%s)", d.ID, state), false, true)
	}
	// Node ids the blueprint lacks.
	for _, q := range others {
		n := 0
		for _, d := range q.Nodes {
			if !mine[d.ID] && n < 3 {
				n++
				add(bp.ID, d.ID, version, fmt.Sprintf("node %q of blueprint %q, which this blueprint lacks", d.ID, q.ID), false, false)
			}
		}
	}
	for _, d := range bp.Nodes {
		if d.Config.Fallback != "" {
			id := d.ID + "@fallback"
			add(bp.ID, id, version, fmt.Sprintf("%q, the name of a fallback attempt record", id), false, !p.ids[id])
		}
	}
	if !p.ids["no such node"] {
		add(bp.ID, "no such node", version, "an unknown node id", false, true)
	}
	// A version and a blueprint the worker lacks.
	add(bp.ID, bp.Nodes[0].ID, "no such version", "a version the worker lacks", true, true)
	add("no such blueprint", bp.Nodes[0].ID, "", "a blueprint the worker lacks", true, true)
	return out
}

// inject handles every stray job of finished run r with HandleJob and
// then sends it as a message.
func (p *protoStrays) inject(r *protoRun) {
	s := p.s
	rng := rand.New(rand.NewPCG(s.seed^0x57a7, uint64(r.c.index)))
	rig := p.rigs[rng.IntN(len(p.rigs))]
	strays := p.jobs(r, rng, rig.checked)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sent, dlq := 0, 0
	for _, st := range strays {
		err, panicked := protoHandle(ctx, rig.a, st.job)
		switch {
		case panicked != nil:
			s.report(r, "%s: stray job %s (%s) panicked: %v", rig.name, protoJSON(st.job), st.what, panicked)
			continue
		case st.dlq && !errors.Is(err, sqsadapter.ErrUnknownBlueprint):
			s.report(r, "%s: stray job %s (%s): HandleJob = %v; the bad-input table leaves it for the dead-letter queue (ErrUnknownBlueprint)", rig.name, protoJSON(st.job), st.what, err)
		case !st.dlq && err != nil:
			s.report(r, "%s: stray job %s (%s): HandleJob = %v; the bad-input table drops it (nil: message deleted)", rig.name, protoJSON(st.job), st.what, err)
		}
		if !st.raw {
			continue
		}
		_, err = p.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(rig.queue), MessageBody: aws.String(protoJSON(st.job))})
		if err != nil {
			s.report(r, "send stray job %s: %v", protoJSON(st.job), err)
			continue
		}
		sent++
		if st.dlq {
			dlq++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rig.wantDLQ += dlq
	s.stats.strays += len(strays) + sent
	p.runs = append(p.runs, r)
}

// protoHandle runs HandleJob, turning a panic into a value.
func protoHandle(ctx context.Context, a *sqsadapter.SqsAdapter, job sqsadapter.Job) (err error, panicked any) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return a.HandleJob(ctx, job), nil
}

func protoJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// finish waits for the stray queues to drain, then checks the dead-letter
// queues and that no run that got stray jobs changed or had a node
// function run by them.
func (p *protoStrays) finish() {
	s, e := p.s, p.s.e
	deadline := time.Now().Add(30 * time.Second)
	for _, rig := range p.rigs {
		for {
			v, f, d := p.sqs.Len(rig.queue)
			if v+f+d == 0 {
				break
			}
			if time.Now().After(deadline) {
				s.fail("%s: the stray queue did not drain: %v", rig.name, protoBodies(p.sqs.Messages(rig.queue)))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if v, f, d := p.sqs.Len(rig.dlq); v+f+d != rig.wantDLQ {
			s.fail("%s: %d message(s) dead-lettered, the bad-input table sends %d there: %v", rig.name, v+f+d, rig.wantDLQ, protoBodies(p.sqs.Messages(rig.dlq)))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range p.runs {
		if calls := p.calls.forRun(r.runID); len(calls) > 0 {
			var ids []string
			for id := range calls {
				ids = append(ids, fmt.Sprintf("%s (%s)", id, r.exp.States[id]))
			}
			slices.Sort(ids)
			s.report(r, "stray jobs ran node functions of the finished (%s) run: %v", r.st.Status, ids)
		}
		now, err := e.client.GetRun(ctx, r.runID)
		if err != nil {
			s.report(r, "GetRun after the stray jobs: %v", err)
			continue
		}
		if d := protoSameStatus(r.st, now); d != "" {
			s.report(r, "stray jobs changed the finished run: %s", d)
		}
	}
}
