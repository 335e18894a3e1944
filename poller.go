package sqsadapter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/internal/obs"
	"github.com/flowcraft/sqsadapter/store"
)

// errMessageLost cancels a job whose message can no longer be extended:
// another worker may receive it, so this one must stop.
var errMessageLost = errors.New("sqsadapter: job message lost (visibility could not be extended)")

// errLeaseLost cancels a job whose node lease was taken over.
var errLeaseLost = errors.New("sqsadapter: node lease lost to another worker")

// errShutdown cancels running jobs when a shutdown deadline passes.
var errShutdown = errors.New("sqsadapter: shutdown deadline passed")

// Run receives and handles jobs until ctx is done or Shutdown is called. It
// blocks. It has one ReceiveMessage outstanding at a time: it takes a
// worker slot before each receive and asks SQS for as many messages as
// there are free slots (at most 10), so an idle worker makes one long poll
// per wait time (180 an hour at the default 20s). It extends the
// visibility of messages while their jobs run, and deletes messages in
// batches. When ctx is done it stops receiving at once and drains: running
// jobs get the drain timeout (Tuning.DrainTimeout) to finish, then they are
// cancelled and their messages made visible again.
//
// Run returns nil after a clean stop, ErrAdapterClosed if it was already
// called or Shutdown was, and ctx.Err()-style errors only when draining
// had to cancel jobs.
func (a *SqsAdapter) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.ran {
		a.mu.Unlock()
		return fmt.Errorf("%w: Run called twice", ErrAdapterClosed)
	}
	select {
	case <-a.stopping:
		a.mu.Unlock()
		return fmt.Errorf("%w: Run called after Shutdown", ErrAdapterClosed)
	default:
	}
	a.ran, a.running = true, true
	a.mu.Unlock()
	defer close(a.stopped)

	recvCtx, cancelRecv := context.WithCancel(ctx)
	defer cancelRecv()
	go func() { // owned: ends when Run's receive ctx ends, which Run waits for below
		select {
		case <-a.stopping:
		case <-recvCtx.Done():
		}
		cancelRecv()
	}()

	slots := make(chan struct{}, a.cfg.concurrency)
	var jobs sync.WaitGroup
	backoff := a.cfg.pollBackoffMin
	for recvCtx.Err() == nil {
		// Take at least one slot, then every free one up to 10.
		select {
		case slots <- struct{}{}:
		case <-recvCtx.Done():
			continue
		}
		n := 1 + a.takeSlots(recvCtx, slots)
		msgs, err := a.receive(recvCtx, n)
		for range n - len(msgs) {
			<-slots
		}
		if err != nil {
			if recvCtx.Err() != nil {
				break
			}
			a.log.WarnContext(ctx, "sqsadapter: receive failed; backing off", "err", err, "backoff", backoff)
			a.sleepCtx(recvCtx, backoff/2+jitter(backoff/2+1))
			backoff = min(backoff*2, a.cfg.pollBackoffMax)
			continue
		}
		backoff = a.cfg.pollBackoffMin
		if len(msgs) == 0 && a.cfg.waitTime == 0 {
			// Maybe short polling: do not spin on an empty queue.
			a.sleepCtx(recvCtx, a.cfg.pollBackoffMin)
		}
		for _, m := range msgs {
			jobs.Add(1)
			go func() {
				defer jobs.Done()
				var once sync.Once
				release := func() { once.Do(func() { <-slots }) }
				defer release()
				a.processMessage(m, release)
			}()
		}
	}

	// Drain: running jobs finish, up to the deadline; their deletes no
	// longer wait for company.
	a.deleter.hurry()
	drained := make(chan struct{})
	go func() { jobs.Wait(); close(drained) }()
	var err error
	if ctx.Err() != nil { // stopped by ctx, not by Shutdown: use the drain timeout
		t := time.NewTimer(a.cfg.drainTimeout)
		select {
		case <-drained:
		case <-t.C:
			a.hard(errShutdown)
			<-drained
			err = fmt.Errorf("sqsadapter: drain timeout: in-flight jobs cancelled: %w", context.DeadlineExceeded)
		}
		t.Stop()
	} else {
		<-drained // Shutdown cancels jobs itself when its ctx expires
	}
	a.mu.Lock()
	a.running = false
	a.mu.Unlock()
	return err
}

// Shutdown stops receiving at once, lets running jobs finish, and returns
// when Run has returned. Jobs waiting to retry release their messages at
// once. If ctx ends first, running jobs are cancelled (their messages become
// visible again) and Shutdown returns ctx's error after Run has returned.
// Calling Shutdown when Run is not running just marks the adapter closed.
// It is safe to call more than once and concurrently.
func (a *SqsAdapter) Shutdown(ctx context.Context) error {
	a.stopOnce.Do(func() { close(a.stopping) })
	a.mu.Lock()
	ran := a.ran
	a.mu.Unlock()
	if !ran {
		a.hard(errShutdown)
		return nil
	}
	select {
	case <-a.stopped:
		return nil
	case <-ctx.Done():
		a.hard(errShutdown)
		<-a.stopped
		return ctx.Err()
	}
}

func (a *SqsAdapter) receive(ctx context.Context, n int) ([]types.Message, error) {
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(a.cfg.queueURL),
		MaxNumberOfMessages:         int32(n),
		WaitTimeSeconds:             min(a.seconds(a.cfg.waitTime), 20),
		VisibilityTimeout:           a.seconds(a.cfg.visibilityTimeout),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	}
	if a.cfg.hooks != nil {
		// The trace context, and when the message was sent (queue lag).
		in.MessageAttributeNames = obs.Fields
		in.MessageSystemAttributeNames = append(in.MessageSystemAttributeNames, types.MessageSystemAttributeNameSentTimestamp)
	}
	out, err := a.cfg.sqs.ReceiveMessage(ctx, in)
	if err != nil {
		return nil, err
	}
	return out.Messages, nil
}

// takeSlots takes more free worker slots after the first, up to 9 more: at
// once if enough are free, else waiting up to the receive batch window for
// at least half the batch, so that a busy worker receives in batches rather
// than one message per call. It returns how many it took.
func (a *SqsAdapter) takeSlots(ctx context.Context, slots chan struct{}) int {
	want := min(10, a.cfg.concurrency) - 1
	enough := (want + 1) / 2
	n := 0
	try := func() {
		for n < want {
			select {
			case slots <- struct{}{}:
				n++
			default:
				return
			}
		}
	}
	try()
	if n >= enough || a.cfg.receiveBatchWindow <= 0 {
		return n
	}
	deadline := time.NewTimer(a.cfg.receiveBatchWindow)
	defer deadline.Stop()
	for n < enough {
		select {
		case slots <- struct{}{}:
			n++
		case <-deadline.C:
			try()
			return n
		case <-ctx.Done():
			return n
		}
	}
	try()
	return n
}

// processMessage handles one received message and settles it: delete,
// make visible again after a delay, or leave it. It calls release to give
// its worker slot back as soon as the job is handled, before the delete.
func (a *SqsAdapter) processMessage(m types.Message, release func()) {
	ctx := a.jobsCtx
	body := aws.ToString(m.Body)
	log := a.log.With("msg_id", aws.ToString(m.MessageId))
	job, err := decodeJob([]byte(body))
	if err != nil {
		// Poison: nothing names a run to fail. Leave it to the queue's
		// redrive policy (dead-letter queue after maxReceiveCount).
		log.ErrorContext(ctx, "sqsadapter: undecodable job message left for the dead-letter queue", "err", err, "receive_count", m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
		a.changeVisibility(ctx, m, a.cfg.visibilityTimeout)
		return
	}
	o := a.runJob(ctx, job, &m)
	release()
	switch o.kind {
	case outcomeDone:
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ackTimeout)
		defer cancel()
		if err := a.deleter.do(actx, aws.ToString(m.ReceiptHandle)); err != nil {
			// Harmless: the redelivery replays idempotent steps only.
			log.WarnContext(ctx, "sqsadapter: delete message", "run_id", job.RunID, "node_id", job.NodeID, "err", err)
		}
	case outcomeRetry:
		if o.err != nil {
			log.WarnContext(ctx, "sqsadapter: job not done; it will be redelivered", "run_id", job.RunID, "node_id", job.NodeID, "delay", o.delay, "err", o.err)
		}
		delay := o.delay
		if delay == 0 {
			delay = a.redeliveryBackoff(m)
		}
		a.changeVisibility(ctx, m, delay)
	case outcomeAbandon:
	}
}

// redeliveryBackoff grows with the message's receive count: 1s, 2s, 4s…
// capped at the visibility timeout.
func (a *SqsAdapter) redeliveryBackoff(m types.Message) time.Duration {
	n, _ := strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	d := time.Duration(math.Pow(2, float64(min(max(n-1, 0), 16)))) * a.cfg.sqsTimeUnit
	return min(d, a.cfg.visibilityTimeout)
}

func (a *SqsAdapter) changeVisibility(ctx context.Context, m types.Message, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ackTimeout)
	defer cancel()
	_, err := a.cfg.sqs.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(a.cfg.queueURL),
		ReceiptHandle:     m.ReceiptHandle,
		VisibilityTimeout: a.seconds(d),
	})
	if err != nil {
		a.log.WarnContext(ctx, "sqsadapter: change message visibility", "msg_id", aws.ToString(m.MessageId), "err", err)
	}
}

// seconds rounds d up to whole seconds (SQS's unit for visibility and
// waits), within SQS's 0..12h.
func (a *SqsAdapter) seconds(d time.Duration) int32 {
	unit := a.cfg.sqsTimeUnit
	s := (d + unit - 1) / unit
	return int32(min(max(s, 0), 12*3600))
}

// runJob handles one job under a heartbeat that keeps its message (if any)
// and its node lease alive, and cancels the job when either is lost.
func (a *SqsAdapter) runJob(parent context.Context, job Job, m *types.Message) outcome {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	owner := jobOwner(a.cfg.workerID, m)
	hb := &heartbeat{a: a, m: m, ctx: ctx, cancel: cancel}
	hb.start()
	defer hb.halt()
	var msg *obs.Message
	if a.cfg.hooks != nil {
		if m != nil {
			mm := messageOf(m)
			msg = &mm
		} else if mm, ok := obs.MessageFrom(parent); ok {
			msg = &mm
		}
		if msg != nil && job.trace == nil {
			job.trace = msg.Carrier
		}
	}
	return a.handle(ctx, job, owner, hb.setLease, msg)
}

// jobOwner names a handling in leases: the worker id, the message id if
// there is a message, and random hex digits (16, or 8 after a message id),
// joined by "/".
func jobOwner(workerID string, m *types.Message) string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	n := 16
	b := make([]byte, 0, 128)
	b = append(append(b, workerID...), '/')
	if m != nil {
		b = append(append(b, aws.ToString(m.MessageId)...), '/')
		n = 8
	}
	return string(hex.AppendEncode(b, r[:n/2]))
}

// heartbeat extends a running job's message visibility and node lease every
// third of the visibility timeout, as a ticker would: beats follow a fixed
// schedule from the job's start, and a beat that outlasts the period is
// followed by one at once. It runs on a timer, so that a job that finishes
// before its first beat costs no goroutine.
type heartbeat struct {
	a      *SqsAdapter
	m      *types.Message
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	lease   *leaseRef
	timer   *time.Timer
	next    time.Time     // when the timer was due
	stopped bool          // halted: no more beats
	beating chan struct{} // closed when the beat in progress returns; nil if none
}

func (h *heartbeat) setLease(l *leaseRef) {
	h.mu.Lock()
	h.lease = l
	h.mu.Unlock()
}

func (h *heartbeat) start() {
	period := h.a.cfg.visibilityTimeout / 3
	h.mu.Lock()
	h.next = time.Now().Add(period)
	h.timer = time.AfterFunc(period, h.beat)
	h.mu.Unlock()
}

// halt stops the beats and waits for one in progress to return.
func (h *heartbeat) halt() {
	h.mu.Lock()
	h.stopped = true
	h.timer.Stop()
	beating := h.beating
	h.mu.Unlock()
	if beating != nil {
		<-beating
	}
}

func (h *heartbeat) beat() {
	h.mu.Lock()
	if h.stopped || h.ctx.Err() != nil {
		h.mu.Unlock()
		return
	}
	beating := make(chan struct{})
	h.beating = beating
	h.mu.Unlock()
	defer close(beating)
	again := h.extend(h.ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beating = nil
	if !again || h.stopped || h.ctx.Err() != nil {
		return
	}
	period, now := h.a.cfg.visibilityTimeout/3, time.Now()
	h.next = h.next.Add(period)
	d := h.next.Sub(now)
	if d < 0 {
		// Due while this beat ran: one beat at once stands for every beat
		// missed, as a ticker's buffered tick does.
		for !h.next.Add(period).After(now) {
			h.next = h.next.Add(period)
		}
		d = 0
	}
	h.timer.Reset(d)
}

// extend extends the message's visibility and the node's lease, once; false
// if the job was cancelled because either is lost.
func (h *heartbeat) extend(ctx context.Context) bool {
	vis := h.a.cfg.visibilityTimeout
	if h.m != nil {
		_, err := h.a.cfg.sqs.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl:          aws.String(h.a.cfg.queueURL),
			ReceiptHandle:     h.m.ReceiptHandle,
			VisibilityTimeout: h.a.seconds(vis),
		})
		var invalid *types.ReceiptHandleIsInvalid
		var notInFlight *types.MessageNotInflight
		if errors.As(err, &invalid) || errors.As(err, &notInFlight) {
			h.cancel(errMessageLost)
			return false
		}
		if err != nil && ctx.Err() == nil {
			h.a.log.WarnContext(ctx, "sqsadapter: extend message visibility", "msg_id", aws.ToString(h.m.MessageId), "err", err)
		}
	}
	h.mu.Lock()
	l := h.lease
	h.mu.Unlock()
	if l != nil {
		err := h.a.cfg.contexts.ExtendLease(ctx, l.runID, l.nodeID, l.owner, time.Now().Add(vis))
		h.mu.Lock()
		current := h.lease == l
		h.mu.Unlock()
		if errors.Is(err, store.ErrLeaseLost) && current {
			h.cancel(errLeaseLost)
			return false
		}
		if err != nil && current && ctx.Err() == nil {
			h.a.log.WarnContext(ctx, "sqsadapter: extend node lease", "run_id", l.runID, "node_id", l.nodeID, "err", err)
		}
	}
	return true
}

func (a *SqsAdapter) sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// send enqueues jobs; it returns when SQS has accepted all of them.
func (a *SqsAdapter) send(ctx context.Context, jobs ...Job) error {
	if a.cfg.hooks != nil {
		a.traced(ctx, jobs)
	}
	return a.sender.do(ctx, jobs...)
}

func (a *SqsAdapter) sendBatch(ctx context.Context, jobs []Job) []error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ackTimeout)
	defer cancel()
	errs := make([]error, len(jobs))
	strs := make([]string, 2*len(jobs)) // the entries point into it
	bodies, ids := strs[:len(jobs)], strs[len(jobs):]
	var attrs []map[string]types.MessageAttributeValue // the trace context's, when any job has one
	for i, j := range jobs {
		b, err := j.encode()
		if err != nil {
			errs[i] = fmt.Errorf("sqsadapter: encode job %s: %w", j, err)
		}
		bodies[i] = b
		if j.trace != nil {
			if attrs == nil {
				attrs = make([]map[string]types.MessageAttributeValue, len(jobs))
			}
			attrs[i] = fitAttributes(j.messageAttributes(), len(b))
		}
	}
	// size is what SQS counts of entry i: its body and its attributes.
	size := func(i int) int {
		if attrs == nil {
			return len(bodies[i])
		}
		return len(bodies[i]) + attributesSize(attrs[i])
	}
	// Split into calls of at most limits.BatchEntries entries and
	// limits.MessageBytes bytes (SQS's limits on one SendMessageBatch).
	for start := 0; start < len(jobs); {
		end, total := start, 0
		for end < len(jobs) && end-start < limits.BatchEntries && (end == start || total+size(end) <= limits.MessageBytes) {
			total += size(end)
			end++
		}
		var entries []types.SendMessageBatchRequestEntry
		for i := start; i < end; i++ {
			if errs[i] == nil {
				ids[i] = strconv.Itoa(i)
				e := types.SendMessageBatchRequestEntry{Id: &ids[i], MessageBody: &bodies[i]}
				if attrs != nil {
					e.MessageAttributes = attrs[i]
				}
				if d := jobs[i].delay; d > 0 {
					// SQS delays in whole seconds, at most 900: round up, so
					// that a timer never fires early.
					second := time.Duration(float64(a.cfg.sqsTimeUnit) * a.cfg.clockSpeed) // in the clock's time
					e.DelaySeconds = int32(min((d+second-1)/second, 900))
				}
				entries = append(entries, e)
			}
		}
		if len(entries) > 0 {
			out, err := a.cfg.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(a.cfg.queueURL), Entries: entries})
			if err != nil {
				for i := start; i < end; i++ {
					if errs[i] == nil {
						errs[i] = fmt.Errorf("sqsadapter: send job %s: %w", jobs[i], err)
					}
				}
			} else {
				for _, f := range out.Failed {
					i, _ := strconv.Atoi(aws.ToString(f.Id))
					errs[i] = fmt.Errorf("sqsadapter: send job %s: %s: %s", jobs[i], aws.ToString(f.Code), aws.ToString(f.Message))
				}
			}
		}
		start = end
	}
	return errs
}

func (a *SqsAdapter) deleteBatch(ctx context.Context, handles []string) []error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ackTimeout)
	defer cancel()
	errs := make([]error, len(handles))
	entries := make([]types.DeleteMessageBatchRequestEntry, len(handles))
	for i, h := range handles {
		entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(h)}
	}
	out, err := a.cfg.sqs.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(a.cfg.queueURL), Entries: entries})
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for _, f := range out.Failed {
		i, _ := strconv.Atoi(aws.ToString(f.Id))
		if i >= 0 && i < len(errs) {
			errs[i] = fmt.Errorf("%s: %s", aws.ToString(f.Code), aws.ToString(f.Message))
		}
	}
	return errs
}
