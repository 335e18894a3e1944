package sqsadaptertest

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/flowcraft/sqsadapter/internal/limits"
)

// Defaults and limits of the in-memory SQS. The limits are those of Amazon SQS;
// the integer parameters they bound are counted in QueueOptions.VisibilityUnit.
const (
	// AccountID is the account that appears in queue URLs and ARNs.
	AccountID = "000000000000"
	// DefaultVisibilityTimeout is a queue's visibility timeout when
	// QueueOptions.VisibilityTimeout is zero.
	DefaultVisibilityTimeout = 30 * time.Second
	// DefaultMaxMessageBytes is a queue's message size limit when
	// QueueOptions.MaxMessageBytes is zero (256 KiB, as in SQS).
	DefaultMaxMessageBytes = limits.MessageBytes

	maxBatchEntries      = limits.BatchEntries
	maxReceiveMessages   = 10
	maxVisibilityUnits   = 43200 // 12 hours in seconds
	maxWaitUnits         = 20
	maxDelayUnits        = 900
	maxMessageAttributes = 10
	region               = "us-east-1"
	urlPrefix            = "https://sqs.local/" + AccountID + "/"
)

// Operation names passed to the BeforeCall and AfterCall hooks and used as
// keys of Calls. They are the names of the SQSClient methods.
const (
	OpSendMessage                  = "SendMessage"
	OpSendMessageBatch             = "SendMessageBatch"
	OpReceiveMessage               = "ReceiveMessage"
	OpDeleteMessage                = "DeleteMessage"
	OpDeleteMessageBatch           = "DeleteMessageBatch"
	OpChangeMessageVisibility      = "ChangeMessageVisibility"
	OpChangeMessageVisibilityBatch = "ChangeMessageVisibilityBatch"
)

// QueueOptions configures a queue created by SQS.CreateQueue. The zero value
// is a standard queue with SQS's defaults.
type QueueOptions struct {
	// VisibilityTimeout is how long a received message stays invisible when
	// ReceiveMessage does not set VisibilityTimeout. Zero means
	// DefaultVisibilityTimeout. Sub-second values are allowed.
	VisibilityTimeout time.Duration

	// VisibilityUnit is the duration of one unit of the integer parameters
	// that SQS counts in seconds: VisibilityTimeout of ReceiveMessage and
	// ChangeMessageVisibility, WaitTimeSeconds, and DelaySeconds. Zero means
	// time.Second; a test can set 100*time.Millisecond to make "1" mean 100ms.
	// The range checks of SQS (e.g. WaitTimeSeconds ≤ 20) apply to the integer.
	VisibilityUnit time.Duration

	// Delay is the delay of a message sent with DelaySeconds 0 (the queue's
	// DelaySeconds attribute in SQS).
	Delay time.Duration

	// ReceiveWaitTime is the long-poll wait of a ReceiveMessage call with
	// WaitTimeSeconds 0 (the queue's ReceiveMessageWaitTimeSeconds attribute).
	// Zero means short polling.
	ReceiveWaitTime time.Duration

	// MaxReceiveCount and DeadLetterQueueURL form the redrive policy. When
	// both are set, a message that has already been received MaxReceiveCount
	// times is moved to the dead-letter queue the next time a ReceiveMessage
	// call would deliver it, instead of being delivered. The dead-letter queue
	// is looked up at that moment; while it does not exist, nothing moves.
	MaxReceiveCount    int
	DeadLetterQueueURL string

	// MaxMessageBytes bounds the size of one message (body plus message
	// attribute names, types and values) and of the sum of a batch's
	// messages. Zero means DefaultMaxMessageBytes.
	MaxMessageBytes int
}

func (o QueueOptions) withDefaults(name string) QueueOptions {
	if o.VisibilityTimeout < 0 || o.VisibilityUnit < 0 || o.Delay < 0 ||
		o.ReceiveWaitTime < 0 || o.MaxReceiveCount < 0 || o.MaxMessageBytes < 0 {
		panic(fmt.Sprintf("sqsadaptertest: CreateQueue %q: negative option in %+v", name, o))
	}
	if o.VisibilityTimeout == 0 {
		o.VisibilityTimeout = DefaultVisibilityTimeout
	}
	if o.VisibilityUnit == 0 {
		o.VisibilityUnit = time.Second
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	return o
}

// MessageState says where a message is in its life cycle.
type MessageState int

const (
	// MessageVisible messages are returned by the next ReceiveMessage.
	MessageVisible MessageState = iota
	// MessageInFlight messages were received and their visibility timeout
	// has not expired.
	MessageInFlight
	// MessageDelayed messages were sent with a delay that has not elapsed.
	MessageDelayed
)

// String returns "visible", "in-flight" or "delayed".
func (s MessageState) String() string {
	switch s {
	case MessageVisible:
		return "visible"
	case MessageInFlight:
		return "in-flight"
	case MessageDelayed:
		return "delayed"
	default:
		return "MessageState(" + strconv.Itoa(int(s)) + ")"
	}
}

// Message is a snapshot of a message held by a queue, returned by
// SQS.Messages. Mutating it does not affect the queue.
type Message struct {
	MessageID         string
	Body              string
	MessageAttributes map[string]types.MessageAttributeValue
	ReceiveCount      int
	State             MessageState
	SentAt            time.Time
	FirstReceivedAt   time.Time // zero if never received
	VisibleAt         time.Time // when it becomes (or became) visible
}

// Stats counts messages, over all queues, since NewSQS.
type Stats struct {
	Sent       int // messages accepted by SendMessage and SendMessageBatch
	Received   int // deliveries returned by ReceiveMessage (redeliveries count again)
	Deleted    int // messages removed by DeleteMessage and DeleteMessageBatch
	Redriven   int // messages moved to a dead-letter queue
	Duplicated int // extra copies enqueued because DuplicateDelivery returned true
}

// SQS is an in-memory Amazon SQS that implements sqsadapter.SQSClient with
// the semantics of standard queues: receipt handles, visibility timeouts,
// receive counts, delays, long polling, batches, size limits and redrive to a
// dead-letter queue. Create one with NewSQS and queues with CreateQueue.
//
// All methods are safe for concurrent use. ReceiveMessage blocks for up to
// its wait time; every other method returns at once. SQS starts no goroutine:
// long polls use timers that are stopped before the call returns, so an SQS
// can be used inside a testing/synctest bubble, provided it is created there.
//
// It is stricter than SQS where strictness finds bugs: a receipt handle is
// valid only until the message is received again, deleted or purged (SQS
// sometimes accepts a stale handle), and ChangeMessageVisibility on a message
// whose visibility timeout has expired fails with *types.MessageNotInflight.
// It is more predictable where SQS is random: a short poll returns every
// visible message up to MaxNumberOfMessages, oldest first, and a message is
// delivered twice only when DuplicateDelivery asks for it.
//
// Failures are the SDK's typed errors (*types.QueueDoesNotExist,
// *types.ReceiptHandleIsInvalid, *types.MessageNotInflight, the batch errors)
// or, where the SDK has no type, a *smithy.GenericAPIError with SQS's code
// ("InvalidParameterValue", "MissingParameter"); both satisfy smithy.APIError.
//
// The hook fields are read without locking: set them before the SQS is used
// by more than one goroutine. A hook must not call methods of the SQS.
type SQS struct {
	// BeforeCall, if set, is called at the start of every SQSClient method
	// with the method name (OpSendMessage, ...) and the queue URL. A non-nil
	// error fails the call with that error before it has any effect.
	BeforeCall func(op, queueURL string) error

	// AfterCall, if set, is called after a method succeeded and took effect.
	// A non-nil error is returned to the caller instead of the output, as when
	// a response is lost: a message was sent, received (and is now in
	// flight), deleted or had its visibility changed, but the caller does not
	// know it.
	AfterCall func(op, queueURL string) error

	// DuplicateDelivery, if set, is called with the body of each message that
	// ReceiveMessage returns. Returning true enqueues an independent copy of
	// the message (new MessageId, receive count 0, same body and attributes)
	// that is visible at once, as SQS's at-least-once delivery may do.
	DuplicateDelivery func(body string) bool

	mu     sync.Mutex
	queues map[string]*queue
	calls  map[string]int
	stats  Stats
}

// NewSQS returns an SQS with no queues.
func NewSQS() *SQS {
	return &SQS{queues: make(map[string]*queue), calls: make(map[string]int)}
}

type queue struct {
	name      string
	arn       string
	opts      QueueOptions
	msgs      []*message          // in send order
	byReceipt map[string]*message // current receipt handle → in-flight or expired message
	wake      chan struct{}       // closed when messages may have become receivable
}

type message struct {
	id           string
	body         string
	md5Body      string
	attrs        map[string]types.MessageAttributeValue
	sysAttrs     map[string]string // MessageGroupId, MessageDeduplicationId, AWSTraceHeader, DeadLetterQueueSourceArn
	size         int
	sentAt       time.Time
	firstRecvAt  time.Time
	visibleAt    time.Time
	receiveCount int
	receipt      string
	delay        time.Duration // explicit DelaySeconds; zero means the queue's Delay
}

func (m *message) stateAt(now time.Time) MessageState {
	switch {
	case !m.visibleAt.After(now):
		return MessageVisible
	case m.receiveCount == 0:
		return MessageDelayed
	default:
		return MessageInFlight
	}
}

// notify wakes every long poll waiting on q.
func (q *queue) notify() {
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
}

// waitChan returns a channel closed by the next notify. It is created by the
// waiter, so that inside a synctest bubble it belongs to the bubble.
func (q *queue) waitChan() <-chan struct{} {
	if q.wake == nil {
		q.wake = make(chan struct{})
	}
	return q.wake
}

// nextVisible returns the earliest time after now at which a message of q
// becomes visible.
func (q *queue) nextVisible(now time.Time) (time.Time, bool) {
	var next time.Time
	for _, m := range q.msgs {
		if m.visibleAt.After(now) && (next.IsZero() || m.visibleAt.Before(next)) {
			next = m.visibleAt
		}
	}
	return next, !next.IsZero()
}

func (q *queue) remove(m *message) {
	if i := slices.Index(q.msgs, m); i >= 0 {
		q.msgs = slices.Delete(q.msgs, i, i+1)
	}
	if m.receipt != "" {
		delete(q.byReceipt, m.receipt)
		m.receipt = ""
	}
}

// CreateQueue creates a standard queue named name and returns its URL,
// "https://sqs.local/000000000000/<name>". Creating a queue that exists keeps
// its messages and replaces its options. It panics if name is not a valid SQS
// queue name (1–80 letters, digits, '-' or '_') or an option is negative.
func (s *SQS) CreateQueue(name string, o QueueOptions) string {
	if !validName(name) {
		panic(fmt.Sprintf("sqsadaptertest: invalid queue name %q", name))
	}
	o = o.withDefaults(name)
	url := urlPrefix + name
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.queues[url]; ok {
		q.opts = o
		q.notify()
		return url
	}
	s.queues[url] = &queue{
		name:      name,
		arn:       "arn:aws:sqs:" + region + ":" + AccountID + ":" + name,
		opts:      o,
		byReceipt: make(map[string]*message),
	}
	return url
}

// Len reports how many messages of the queue at url are visible, in flight
// and delayed. An unknown url has none.
func (s *SQS) Len(url string) (visible, inFlight, delayed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[url]
	if !ok {
		return 0, 0, 0
	}
	now := time.Now()
	for _, m := range q.msgs {
		switch m.stateAt(now) {
		case MessageVisible:
			visible++
		case MessageInFlight:
			inFlight++
		case MessageDelayed:
			delayed++
		}
	}
	return visible, inFlight, delayed
}

// Messages returns a snapshot of the messages of the queue at url, in the
// order they were sent. An unknown url has none.
func (s *SQS) Messages(url string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[url]
	if !ok {
		return nil
	}
	now := time.Now()
	out := make([]Message, 0, len(q.msgs))
	for _, m := range q.msgs {
		out = append(out, Message{
			MessageID:         m.id,
			Body:              m.body,
			MessageAttributes: copyAttributes(m.attrs, nil),
			ReceiveCount:      m.receiveCount,
			State:             m.stateAt(now),
			SentAt:            m.sentAt,
			FirstReceivedAt:   m.firstRecvAt,
			VisibleAt:         m.visibleAt,
		})
	}
	return out
}

// Purge deletes every message of the queue at url, at once (SQS takes up to
// a minute), and invalidates their receipt handles. An unknown url is ignored.
func (s *SQS) Purge(url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.queues[url]; ok {
		q.msgs = nil
		clear(q.byReceipt)
		q.notify()
	}
}

// Calls returns how many times each SQSClient method was called, including
// calls that failed, keyed by method name (OpSendMessage, ...).
func (s *SQS) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// Stats returns the message counters.
func (s *SQS) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// begin counts the call and runs the checks that precede any effect.
func (s *SQS) begin(ctx context.Context, op, url string) error {
	s.mu.Lock()
	s.calls[op]++
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.BeforeCall != nil {
		return s.BeforeCall(op, url)
	}
	return nil
}

// end runs the AfterCall hook of a call that took effect.
func (s *SQS) end(op, url string) error {
	if s.AfterCall != nil {
		return s.AfterCall(op, url)
	}
	return nil
}

func (s *SQS) queueLocked(url string) (*queue, error) {
	if q, ok := s.queues[url]; ok {
		return q, nil
	}
	return nil, &types.QueueDoesNotExist{Message: aws.String("The specified queue does not exist.")}
}

// SendMessage enqueues one message. It fails with "InvalidParameterValue" if
// the message exceeds the queue's MaxMessageBytes or DelaySeconds is outside
// 0–900, and with *types.InvalidMessageContents if the body has characters
// SQS does not allow. It does not block.
func (s *SQS) SendMessage(ctx context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpSendMessage, url); err != nil {
		return nil, err
	}
	out, err := func() (*sqs.SendMessageOutput, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q, err := s.queueLocked(url)
		if err != nil {
			return nil, err
		}
		m, err := newMessage(q.opts, in.MessageBody, in.DelaySeconds, in.MessageAttributes,
			in.MessageGroupId, in.MessageDeduplicationId, in.MessageSystemAttributes)
		if err != nil {
			return nil, err
		}
		s.enqueueLocked(q, m)
		return &sqs.SendMessageOutput{
			MessageId:              aws.String(m.id),
			MD5OfMessageBody:       aws.String(m.md5Body),
			MD5OfMessageAttributes: md5OfAttributes(m.attrs),
		}, nil
	}()
	if err != nil {
		return nil, err
	}
	if err := s.end(OpSendMessage, url); err != nil {
		return nil, err
	}
	return out, nil
}

// SendMessageBatch enqueues up to 10 messages. The whole call fails (nothing
// is sent) if there are no entries or more than 10, an Id is malformed or
// repeated, or the valid entries together exceed MaxMessageBytes. An entry
// that is invalid on its own (oversize, bad body, bad delay or attributes) is
// reported in Failed with SenderFault and SQS's code, and the others are sent.
// It does not block.
func (s *SQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpSendMessageBatch, url); err != nil {
		return nil, err
	}
	out, err := func() (*sqs.SendMessageBatchOutput, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q, err := s.queueLocked(url)
		if err != nil {
			return nil, err
		}
		ids := make([]*string, len(in.Entries))
		for i, e := range in.Entries {
			ids[i] = e.Id
		}
		if err := validateBatch(ids); err != nil {
			return nil, err
		}
		out := &sqs.SendMessageBatchOutput{}
		msgs := make([]*message, len(in.Entries))
		total := 0
		for i, e := range in.Entries {
			m, err := newMessage(q.opts, e.MessageBody, e.DelaySeconds, e.MessageAttributes,
				e.MessageGroupId, e.MessageDeduplicationId, e.MessageSystemAttributes)
			if err != nil {
				out.Failed = append(out.Failed, entryError(e.Id, err))
				continue
			}
			msgs[i] = m
			total += m.size
		}
		if total > q.opts.MaxMessageBytes {
			return nil, &types.BatchRequestTooLong{Message: aws.String(fmt.Sprintf(
				"Batch requests cannot be longer than %d bytes. You have sent %d bytes.", q.opts.MaxMessageBytes, total))}
		}
		for i, m := range msgs {
			if m == nil {
				continue
			}
			s.enqueueLocked(q, m)
			out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{
				Id:                     in.Entries[i].Id,
				MessageId:              aws.String(m.id),
				MD5OfMessageBody:       aws.String(m.md5Body),
				MD5OfMessageAttributes: md5OfAttributes(m.attrs),
			})
		}
		return out, nil
	}()
	if err != nil {
		return nil, err
	}
	if err := s.end(OpSendMessageBatch, url); err != nil {
		return nil, err
	}
	return out, nil
}

func (s *SQS) enqueueLocked(q *queue, m *message) {
	now := time.Now()
	m.sentAt = now
	delay := m.delay
	if delay == 0 {
		delay = q.opts.Delay
	}
	m.visibleAt = now.Add(delay)
	q.msgs = append(q.msgs, m)
	s.stats.Sent++
	q.notify()
}

// ReceiveMessage returns up to MaxNumberOfMessages (default 1, at most 10)
// visible messages, oldest first, each with a new receipt handle that
// invalidates the message's previous one; they stay invisible for the
// visibility timeout. With a wait time (WaitTimeSeconds, else the queue's
// ReceiveWaitTime) it blocks until at least one message is visible, the wait
// time has passed (returning no messages and no error), or ctx is done
// (returning ctx.Err() and receiving nothing).
//
// System attributes requested through MessageSystemAttributeNames or the
// deprecated AttributeNames ("All", "ApproximateReceiveCount", "SentTimestamp",
// "ApproximateFirstReceiveTimestamp", "SenderId", ...) are returned in
// Attributes; message attributes are returned when named in
// MessageAttributeNames ("All", ".*", "prefix.*" or a name).
func (s *SQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpReceiveMessage, url); err != nil {
		return nil, err
	}
	maxMsgs := int(in.MaxNumberOfMessages)
	if maxMsgs == 0 {
		maxMsgs = 1
	}
	if maxMsgs < 1 || maxMsgs > maxReceiveMessages {
		return nil, invalidParameter("Value %d for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.", in.MaxNumberOfMessages)
	}
	if in.VisibilityTimeout < 0 || in.VisibilityTimeout > maxVisibilityUnits {
		return nil, invalidParameter("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200, if provided.", in.VisibilityTimeout)
	}
	if in.WaitTimeSeconds < 0 || in.WaitTimeSeconds > maxWaitUnits {
		return nil, invalidParameter("Value %d for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided.", in.WaitTimeSeconds)
	}
	sysSel := systemAttributeSelection(in.MessageSystemAttributeNames, in.AttributeNames)
	attrSel := in.MessageAttributeNames

	s.mu.Lock()
	q, err := s.queueLocked(url)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	vis := q.opts.VisibilityTimeout
	if in.VisibilityTimeout > 0 {
		vis = time.Duration(in.VisibilityTimeout) * q.opts.VisibilityUnit
	}
	wait := q.opts.ReceiveWaitTime
	if in.WaitTimeSeconds > 0 {
		wait = time.Duration(in.WaitTimeSeconds) * q.opts.VisibilityUnit
	}
	deadline := time.Now().Add(wait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var got []*message
	for {
		now := time.Now()
		got = s.takeLocked(q, now, maxMsgs, vis)
		if len(got) > 0 || !now.Before(deadline) {
			break
		}
		next := deadline
		if t, ok := q.nextVisible(now); ok && t.Before(next) {
			next = t
		}
		wake := q.waitChan()
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(next.Sub(now))
		} else {
			timer.Reset(next.Sub(now))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		case <-timer.C:
		}
		s.mu.Lock()
	}
	out := &sqs.ReceiveMessageOutput{Messages: make([]types.Message, 0, len(got))}
	var dups []*message
	for _, m := range got {
		out.Messages = append(out.Messages, m.toSDK(sysSel, attrSel))
		if s.DuplicateDelivery != nil {
			dups = append(dups, m.copyForDuplicate())
		}
	}
	s.mu.Unlock()

	if len(dups) > 0 {
		dups = slices.DeleteFunc(dups, func(m *message) bool { return !s.DuplicateDelivery(m.body) })
		if len(dups) > 0 {
			s.mu.Lock()
			now := time.Now()
			for _, m := range dups {
				m.sentAt, m.visibleAt = now, now
				q.msgs = append(q.msgs, m)
			}
			s.stats.Duplicated += len(dups)
			q.notify()
			s.mu.Unlock()
		}
	}
	if err := s.end(OpReceiveMessage, url); err != nil {
		return nil, err
	}
	return out, nil
}

// takeLocked receives up to limit visible messages of q, applying the redrive
// policy, and makes them invisible for vis.
func (s *SQS) takeLocked(q *queue, now time.Time, limit int, vis time.Duration) []*message {
	var got []*message
	var dlq *queue
	if q.opts.MaxReceiveCount > 0 && q.opts.DeadLetterQueueURL != "" {
		dlq = s.queues[q.opts.DeadLetterQueueURL]
	}
	changed := false
	for i := 0; i < len(q.msgs) && len(got) < limit; i++ {
		m := q.msgs[i]
		if m.visibleAt.After(now) {
			continue
		}
		changed = true
		if dlq != nil && m.receiveCount >= q.opts.MaxReceiveCount {
			q.remove(m)
			i--
			m.visibleAt = now
			m.sysAttrs[string(types.MessageSystemAttributeNameDeadLetterQueueSourceArn)] = q.arn
			dlq.msgs = append(dlq.msgs, m)
			dlq.notify()
			s.stats.Redriven++
			continue
		}
		if m.receipt != "" {
			delete(q.byReceipt, m.receipt)
		}
		m.receipt = rand.Text() + rand.Text()
		q.byReceipt[m.receipt] = m
		m.receiveCount++
		if m.firstRecvAt.IsZero() {
			m.firstRecvAt = now
		}
		m.visibleAt = now.Add(vis)
		got = append(got, m)
	}
	s.stats.Received += len(got)
	if changed {
		// Other long polls must recompute when the next message turns visible.
		q.notify()
	}
	return got
}

// DeleteMessage deletes the message whose current receipt handle is given.
// A stale (superseded by a later receive), deleted or unknown handle fails
// with *types.ReceiptHandleIsInvalid. It does not block.
func (s *SQS) DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpDeleteMessage, url); err != nil {
		return nil, err
	}
	err := func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		q, err := s.queueLocked(url)
		if err != nil {
			return err
		}
		return s.deleteLocked(q, aws.ToString(in.ReceiptHandle))
	}()
	if err != nil {
		return nil, err
	}
	if err := s.end(OpDeleteMessage, url); err != nil {
		return nil, err
	}
	return &sqs.DeleteMessageOutput{}, nil
}

func (s *SQS) deleteLocked(q *queue, handle string) error {
	m, ok := q.byReceipt[handle]
	if !ok {
		return invalidReceipt(handle)
	}
	q.remove(m)
	s.stats.Deleted++
	return nil
}

// DeleteMessageBatch deletes up to 10 messages by receipt handle, reporting
// each entry in Successful or Failed (code "ReceiptHandleIsInvalid"). The
// whole call fails on the same batch errors as SendMessageBatch. It does not
// block.
func (s *SQS) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpDeleteMessageBatch, url); err != nil {
		return nil, err
	}
	out, err := func() (*sqs.DeleteMessageBatchOutput, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q, err := s.queueLocked(url)
		if err != nil {
			return nil, err
		}
		ids := make([]*string, len(in.Entries))
		for i, e := range in.Entries {
			ids[i] = e.Id
		}
		if err := validateBatch(ids); err != nil {
			return nil, err
		}
		out := &sqs.DeleteMessageBatchOutput{}
		for _, e := range in.Entries {
			if err := s.deleteLocked(q, aws.ToString(e.ReceiptHandle)); err != nil {
				out.Failed = append(out.Failed, entryError(e.Id, err))
				continue
			}
			out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
		}
		return out, nil
	}()
	if err != nil {
		return nil, err
	}
	if err := s.end(OpDeleteMessageBatch, url); err != nil {
		return nil, err
	}
	return out, nil
}

// ChangeMessageVisibility makes the in-flight message with the given receipt
// handle invisible for VisibilityTimeout units from now; 0 makes it visible
// at once. A stale or unknown handle fails with *types.ReceiptHandleIsInvalid,
// a message whose visibility timeout already expired with
// *types.MessageNotInflight, a value outside 0–43200 with
// "InvalidParameterValue". It does not block.
func (s *SQS) ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpChangeMessageVisibility, url); err != nil {
		return nil, err
	}
	err := func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		q, err := s.queueLocked(url)
		if err != nil {
			return err
		}
		return changeVisibilityLocked(q, aws.ToString(in.ReceiptHandle), in.VisibilityTimeout)
	}()
	if err != nil {
		return nil, err
	}
	if err := s.end(OpChangeMessageVisibility, url); err != nil {
		return nil, err
	}
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func changeVisibilityLocked(q *queue, handle string, units int32) error {
	if units < 0 || units > maxVisibilityUnits {
		return invalidParameter("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200.", units)
	}
	m, ok := q.byReceipt[handle]
	if !ok {
		return invalidReceipt(handle)
	}
	now := time.Now()
	if !m.visibleAt.After(now) {
		return &types.MessageNotInflight{Message: aws.String("The message referred to isn't in flight.")}
	}
	m.visibleAt = now.Add(time.Duration(units) * q.opts.VisibilityUnit)
	q.notify()
	return nil
}

// ChangeMessageVisibilityBatch changes the visibility of up to 10 messages,
// reporting each entry in Successful or Failed with the code of the error
// ChangeMessageVisibility would return. The whole call fails on the same
// batch errors as SendMessageBatch. It does not block.
func (s *SQS) ChangeMessageVisibilityBatch(ctx context.Context, in *sqs.ChangeMessageVisibilityBatchInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	url := aws.ToString(in.QueueUrl)
	if err := s.begin(ctx, OpChangeMessageVisibilityBatch, url); err != nil {
		return nil, err
	}
	out, err := func() (*sqs.ChangeMessageVisibilityBatchOutput, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		q, err := s.queueLocked(url)
		if err != nil {
			return nil, err
		}
		ids := make([]*string, len(in.Entries))
		for i, e := range in.Entries {
			ids[i] = e.Id
		}
		if err := validateBatch(ids); err != nil {
			return nil, err
		}
		out := &sqs.ChangeMessageVisibilityBatchOutput{}
		for _, e := range in.Entries {
			if err := changeVisibilityLocked(q, aws.ToString(e.ReceiptHandle), e.VisibilityTimeout); err != nil {
				out.Failed = append(out.Failed, entryError(e.Id, err))
				continue
			}
			out.Successful = append(out.Successful, types.ChangeMessageVisibilityBatchResultEntry{Id: e.Id})
		}
		return out, nil
	}()
	if err != nil {
		return nil, err
	}
	if err := s.end(OpChangeMessageVisibilityBatch, url); err != nil {
		return nil, err
	}
	return out, nil
}

// newMessage validates a message as SQS does and builds it, not yet enqueued.
func newMessage(o QueueOptions, body *string, delay int32, attrs map[string]types.MessageAttributeValue,
	groupID, dedupID *string, sys map[string]types.MessageSystemAttributeValue) (*message, error) {
	if body == nil || *body == "" {
		return nil, &smithy.GenericAPIError{Code: "MissingParameter", Message: "The request must contain the parameter MessageBody.", Fault: smithy.FaultClient}
	}
	if !limits.ValidMessageBody(*body) {
		return nil, &types.InvalidMessageContents{Message: aws.String("Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF")}
	}
	if delay < 0 || delay > maxDelayUnits {
		return nil, invalidParameter("Value %d for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900.", delay)
	}
	size, err := attributesSize(attrs)
	if err != nil {
		return nil, err
	}
	size += len(*body)
	if size > o.MaxMessageBytes {
		return nil, invalidParameter("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", o.MaxMessageBytes)
	}
	sum := md5.Sum([]byte(*body))
	m := &message{
		id:       newMessageID(),
		body:     *body,
		md5Body:  hex.EncodeToString(sum[:]),
		attrs:    copyAttributes(attrs, nil),
		sysAttrs: make(map[string]string),
		size:     size,
		delay:    time.Duration(delay) * o.VisibilityUnit,
	}
	if groupID != nil {
		m.sysAttrs[string(types.MessageSystemAttributeNameMessageGroupId)] = *groupID
	}
	if dedupID != nil {
		m.sysAttrs[string(types.MessageSystemAttributeNameMessageDeduplicationId)] = *dedupID
	}
	if v, ok := sys[string(types.MessageSystemAttributeNameForSendsAWSTraceHeader)]; ok && v.StringValue != nil {
		m.sysAttrs[string(types.MessageSystemAttributeNameAWSTraceHeader)] = *v.StringValue
	}
	return m, nil
}

// copyForDuplicate returns a new, never-received message with m's content.
func (m *message) copyForDuplicate() *message {
	return &message{
		id:       newMessageID(),
		body:     m.body,
		md5Body:  m.md5Body,
		attrs:    copyAttributes(m.attrs, nil),
		sysAttrs: maps.Clone(m.sysAttrs),
		size:     m.size,
	}
}

// toSDK renders a just-received message with the selected attributes.
func (m *message) toSDK(sysSel map[string]bool, attrNames []string) types.Message {
	out := types.Message{
		MessageId:     aws.String(m.id),
		ReceiptHandle: aws.String(m.receipt),
		Body:          aws.String(m.body),
		MD5OfBody:     aws.String(m.md5Body),
	}
	if len(sysSel) > 0 {
		all := map[string]string{
			string(types.MessageSystemAttributeNameSenderId):                         AccountID,
			string(types.MessageSystemAttributeNameSentTimestamp):                    strconv.FormatInt(m.sentAt.UnixMilli(), 10),
			string(types.MessageSystemAttributeNameApproximateReceiveCount):          strconv.Itoa(m.receiveCount),
			string(types.MessageSystemAttributeNameApproximateFirstReceiveTimestamp): strconv.FormatInt(m.firstRecvAt.UnixMilli(), 10),
		}
		maps.Copy(all, m.sysAttrs)
		out.Attributes = make(map[string]string)
		for k, v := range all {
			if sysSel[string(types.MessageSystemAttributeNameAll)] || sysSel[k] {
				out.Attributes[k] = v
			}
		}
	}
	if len(attrNames) > 0 && len(m.attrs) > 0 {
		if sel := copyAttributes(m.attrs, attrNames); len(sel) > 0 {
			out.MessageAttributes = sel
			out.MD5OfMessageAttributes = md5OfAttributes(sel)
		}
	}
	return out
}

// systemAttributeSelection merges MessageSystemAttributeNames and the
// deprecated AttributeNames into a set of names.
func systemAttributeSelection(sys []types.MessageSystemAttributeName, legacy []types.QueueAttributeName) map[string]bool {
	sel := make(map[string]bool, len(sys)+len(legacy))
	for _, n := range sys {
		sel[string(n)] = true
	}
	for _, n := range legacy {
		sel[string(n)] = true
	}
	return sel
}

// copyAttributes deep-copies the attributes whose names match names
// ("All", ".*", "prefix.*" or an exact name); nil names selects all.
func copyAttributes(attrs map[string]types.MessageAttributeValue, names []string) map[string]types.MessageAttributeValue {
	if len(attrs) == 0 {
		return nil
	}
	out := make(map[string]types.MessageAttributeValue, len(attrs))
	for k, v := range attrs {
		if names != nil && !attributeSelected(k, names) {
			continue
		}
		c := types.MessageAttributeValue{
			DataType:         copyString(v.DataType),
			StringValue:      copyString(v.StringValue),
			BinaryValue:      slices.Clone(v.BinaryValue),
			StringListValues: slices.Clone(v.StringListValues),
		}
		for _, b := range v.BinaryListValues {
			c.BinaryListValues = append(c.BinaryListValues, slices.Clone(b))
		}
		out[k] = c
	}
	return out
}

func attributeSelected(name string, names []string) bool {
	for _, n := range names {
		switch {
		case n == "All" || n == ".*" || n == name:
			return true
		case strings.HasSuffix(n, ".*") && strings.HasPrefix(name, strings.TrimSuffix(n, "*")):
			return true
		}
	}
	return false
}

func copyString(p *string) *string {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// attributesSize validates message attributes and returns the bytes they
// count toward the message size: names, data types and values.
func attributesSize(attrs map[string]types.MessageAttributeValue) (int, error) {
	if len(attrs) > maxMessageAttributes {
		return 0, invalidParameter("Number of message attributes [%d] exceeds the allowed maximum [%d].", len(attrs), maxMessageAttributes)
	}
	size := 0
	for name, v := range attrs {
		if name == "" || len(name) > 256 || !validAttributeName(name) {
			return 0, invalidParameter("Message attribute name '%s' is invalid.", name)
		}
		dt := aws.ToString(v.DataType)
		switch attributeTransport(dt) {
		case transportString:
			if v.StringValue == nil {
				return 0, invalidParameter("Message attribute '%s' must contain a non-empty message attribute value for message attribute type '%s'.", name, dt)
			}
			size += len(*v.StringValue)
		case transportBinary:
			if v.BinaryValue == nil {
				return 0, invalidParameter("Message attribute '%s' must contain a non-empty message attribute value for message attribute type '%s'.", name, dt)
			}
			size += len(v.BinaryValue)
		default:
			return 0, invalidParameter("The type of message attribute '%s' is invalid. You must use only the following supported type prefixes: Binary, Number, String.", name)
		}
		size += len(name) + len(dt)
	}
	return size, nil
}

func validAttributeName(name string) bool {
	lower := strings.ToLower(name)
	if strings.HasPrefix(lower, "aws.") || strings.HasPrefix(lower, "amazon.") ||
		strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	for _, r := range name {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

const (
	transportInvalid = 0
	transportString  = 1
	transportBinary  = 2
)

// attributeTransport maps a data type ("String", "Number.int", "Binary.gz")
// to the transport type byte of SQS's attribute checksum.
func attributeTransport(dataType string) byte {
	base, _, _ := strings.Cut(dataType, ".")
	switch base {
	case "String", "Number":
		return transportString
	case "Binary":
		return transportBinary
	default:
		return transportInvalid
	}
}

// md5OfAttributes computes SQS's MD5OfMessageAttributes: for each attribute
// in name order, the length-prefixed name and data type, a transport byte,
// and the length-prefixed value. It returns nil for no attributes.
func md5OfAttributes(attrs map[string]types.MessageAttributeValue) *string {
	if len(attrs) == 0 {
		return nil
	}
	h := md5.New()
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		v := attrs[name]
		dt := aws.ToString(v.DataType)
		writeField(h, []byte(name))
		writeField(h, []byte(dt))
		t := attributeTransport(dt)
		h.Write([]byte{t})
		if t == transportBinary {
			writeField(h, v.BinaryValue)
		} else {
			writeField(h, []byte(aws.ToString(v.StringValue)))
		}
	}
	return aws.String(hex.EncodeToString(h.Sum(nil)))
}

func writeField(h hash.Hash, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// validateBatch applies SQS's checks on a batch's entry ids.
func validateBatch(ids []*string) error {
	if len(ids) == 0 {
		return &types.EmptyBatchRequest{Message: aws.String("There should be at least one entry in the request.")}
	}
	if len(ids) > maxBatchEntries {
		return &types.TooManyEntriesInBatchRequest{Message: aws.String(fmt.Sprintf(
			"Maximum number of entries per request are %d. You have sent %d.", maxBatchEntries, len(ids)))}
	}
	seen := make(map[string]bool, len(ids))
	for _, p := range ids {
		id := aws.ToString(p)
		if !validName(id) {
			return &types.InvalidBatchEntryId{Message: aws.String(
				"A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.")}
		}
		if seen[id] {
			return &types.BatchEntryIdsNotDistinct{Message: aws.String("Id " + id + " repeated.")}
		}
		seen[id] = true
	}
	return nil
}

// entryError turns an API error into a batch result entry.
func entryError(id *string, err error) types.BatchResultErrorEntry {
	e := types.BatchResultErrorEntry{Id: id, Message: aws.String(err.Error()), SenderFault: true}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = aws.String(ae.ErrorCode())
		e.Message = aws.String(ae.ErrorMessage())
		e.SenderFault = ae.ErrorFault() != smithy.FaultServer
	}
	return e
}

func invalidParameter(format string, args ...any) error {
	return &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: fmt.Sprintf(format, args...), Fault: smithy.FaultClient}
}

func invalidReceipt(handle string) error {
	return &types.ReceiptHandleIsInvalid{Message: aws.String(fmt.Sprintf("The receipt handle %q is not valid.", handle))}
}

// validName reports whether s is a valid queue name or batch entry id.
func validName(s string) bool {
	if s == "" || len(s) > 80 {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// newMessageID returns a random UUID (version 4), the shape of SQS message ids.
func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}
