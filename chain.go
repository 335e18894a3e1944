package sqsadapter

import (
	"context"
	"strings"
	"time"

	"github.com/flowcraft/sqsadapter/internal/jsonvalue"
	"github.com/flowcraft/sqsadapter/internal/obs"
	"github.com/flowcraft/sqsadapter/store"
)

// This file runs chains inline: when a committed node's only taken
// successor has no other predecessor, the worker may handle that
// successor's job next, under the same message, instead of sending it and
// receiving it again. docs/protocol.md ("Inline chains") explains why every
// crash point stays safe; in short, the successor's job is carried by the
// message, which is not deleted until that job is done too, and a
// redelivered message replays the committed steps of its chain and goes on.

// maxChainDepth is the longest chain one message carries: a job's
// successors are run inline at most this many hops from the message's own
// job. It is a protocol constant, not a setting: a redelivered message
// follows its committed chain this far whatever the replaying worker's
// settings (Tuning.ChainNodes is at most this), so that a chain run inline
// by one worker is replayed by any other.
const maxChainDepth = 64

// chain is the state of a message's handling across the jobs it carries.
type chain struct {
	start time.Time // when the message's handling began
	depth int       // hops from the message's own job to the job being handled
	next  inlineJob // the next job, if more
	more  bool
	// msg is what the telemetry hooks know of the message (nil: no hooks
	// or no message); trace is the trace context of the job that chose
	// next, its parent.
	msg   *obs.Message
	trace obs.Carrier
}

// inlineJob is the next job a message carries.
type inlineJob struct {
	job Job
	// in is the job's input when the job carries one, as the committed
	// predecessor staged it: what a sent job would carry, without the JSON
	// round trip, and whatever its size.
	in      any
	carried bool
	// rec is the node's record when it is already committed: the job only
	// replays what follows from it.
	rec *store.NodeRecord
}

// handle runs the protocol for a message's job, then for each job its
// chain carries, and says what to do with the message: it is done only
// when the last of them is.
func (a *SqsAdapter) handle(ctx context.Context, job Job, owner string, setLease func(*leaseRef), msg *obs.Message) outcome {
	ch := &chain{start: time.Now(), msg: msg}
	var cur inlineJob
	var next *inlineJob // nil for the message's own job
	for {
		o := a.handleJob(ctx, job, owner, setLease, ch, next)
		if o.kind != outcomeDone || !ch.more {
			return o
		}
		cur, ch.next, ch.more = ch.next, inlineJob{}, false
		if ch.trace != nil {
			cur.job.trace, ch.trace = ch.trace, nil
		}
		next, job = &cur, cur.job
		ch.depth++
		// The last job's lease is done with (a job that ends without its
		// commit may leave it set): a beat must not extend it meanwhile.
		setLease(nil)
		if next.rec == nil && a.stoppingNow() {
			// Shutdown began after the chain chose this job: send it
			// instead of starting a node the shutdown may cut.
			if err := a.send(ctx, next.sendable(a.cfg.maxInlineInput)); err != nil {
				return retryAfter(0, err)
			}
			return done
		}
	}
}

// sendable is the job as step 5 sends it: carrying its input when it
// carries one that is small enough (at most maxInput bytes of JSON).
func (j *inlineJob) sendable(maxInput int) Job {
	job := j.job
	if j.carried && maxInput > 0 {
		if b, err := jsonvalue.Marshal(j.in); err == nil && len(b) <= maxInput {
			job.Input = b
		}
	}
	return job
}

// stoppingNow reports whether Shutdown began.
func (a *SqsAdapter) stoppingNow() bool {
	select {
	case <-a.stopping:
		return true
	default:
		return false
	}
}

// chainTo makes t, the only taken successor of the committed record rec,
// the next job of this message's chain if the chain may grow: true if it
// did. in and carried are the input t's job would carry.
func (x *jobRun) chainTo(ctx context.Context, t *planNode, in any, carried bool) bool {
	ch, a := x.chain, x.a
	if ch == nil || ch.more || ch.depth >= a.cfg.chainNodes || time.Since(ch.start) >= a.cfg.chainTime || a.stoppingNow() {
		return false // draining: the rest of the chain goes to the queue
	}
	if deadline, ok := ctx.Deadline(); ok {
		// The caller's time is bounded (HandleJob in a Lambda function):
		// t's attempt must fit in what is left of it, or a sent job gets
		// a delivery of its own.
		timeout := t.timeout
		if timeout == 0 {
			timeout = a.cfg.nodeTimeout
		}
		if timeout == 0 || time.Until(deadline) < timeout+a.cfg.ackTimeout {
			return false
		}
	}
	ch.next, ch.more = inlineJob{job: x.jobFor(t), in: in, carried: carried}, true
	return true
}

// carriedElsewhere reports whether a lease that refused this handling's
// acquire is held by the handling of another message: for a job this
// message carries only as a chain's (a duplicate of the message following
// its chain into a job cut from it and sent), that other message carries
// the job, and this one is done with it. A lease of a delivery of this same
// message, or of a handling with no message, says nothing of the kind.
func (x *jobRun) carriedElsewhere(holder string) bool {
	if x.chain == nil || x.chain.depth == 0 {
		return false
	}
	mine, theirs := ownerMessage(x.owner), ownerMessage(holder)
	return mine != "" && theirs != "" && mine != theirs
}

// ownerMessage is the message id in a lease owner that jobOwner made for
// a handling of a message ("" for one without).
func ownerMessage(owner string) string {
	i := strings.LastIndexByte(owner, '/')
	if i < 0 || len(owner)-i-1 != 8 {
		return ""
	}
	rest := owner[:i]
	return rest[strings.LastIndexByte(rest, '/')+1:]
}

// follow makes t, the only taken successor of the committed record being
// replayed, the next job of this message's chain when its record r shows
// that it ran: it may have run inline under this message, which then still
// carries what follows from it. Within maxChainDepth, whatever the
// settings, so that any worker replays a chain any other ran.
func (x *jobRun) follow(t *planNode, r *store.NodeRecord) {
	ch := x.chain
	if ch == nil || ch.depth >= maxChainDepth || r == nil {
		return
	}
	if ch.more {
		// This handling already chose its next job: send t's instead, a
		// duplicate that t's record absorbs.
		x.sends = append(x.sends, x.jobFor(t))
		return
	}
	ch.next, ch.more = inlineJob{job: x.jobFor(t)}, true
	if r.State == store.NodeCommitted {
		ch.next.rec = r
	}
}

// onlySuccessor reports whether t, a taken target of the committed record
// rec, is the only one and has no other predecessor: the chain's next job.
func onlySuccessor(t *planNode, rec *store.NodeRecord) bool {
	return len(rec.Taken) == 1 && !t.isJoin()
}
