package sqsadaptertest_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
	"github.com/flowcraft/sqsadapter/store/storetest"
)

var _ sqsadapter.SQSClient = (*sqsadaptertest.SQS)(nil)

func newSQSQueue(t *testing.T, o sqsadaptertest.QueueOptions) (*sqsadaptertest.SQS, string) {
	t.Helper()
	s := sqsadaptertest.NewSQS()
	return s, s.CreateQueue("jobs", o)
}

func sendSQS(t *testing.T, s *sqsadaptertest.SQS, url, body string) string {
	t.Helper()
	out, err := s.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(body)})
	require.NoError(t, err)
	return aws.ToString(out.MessageId)
}

// receiveSQS short-polls (unless in sets a wait) and returns the messages.
func receiveSQS(t *testing.T, s *sqsadaptertest.SQS, url string, in sqs.ReceiveMessageInput) []types.Message {
	t.Helper()
	in.QueueUrl = aws.String(url)
	out, err := s.ReceiveMessage(t.Context(), &in)
	require.NoError(t, err)
	return out.Messages
}

func receiveOneSQS(t *testing.T, s *sqsadaptertest.SQS, url string) types.Message {
	t.Helper()
	msgs := receiveSQS(t, s, url, sqs.ReceiveMessageInput{
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
	})
	require.Len(t, msgs, 1)
	return msgs[0]
}

func deleteSQS(ctx context.Context, s *sqsadaptertest.SQS, url string, m types.Message) error {
	_, err := s.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle})
	return err
}

func changeVisibilitySQS(ctx context.Context, s *sqsadaptertest.SQS, url string, m types.Message, units int32) error {
	_, err := s.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: units,
	})
	return err
}

func sqsErrorCode(t *testing.T, err error) string {
	t.Helper()
	var ae smithy.APIError
	require.ErrorAs(t, err, &ae)
	return ae.ErrorCode()
}

type sqsQueueLen struct{ visible, inFlight, delayed int }

func sqsLen(s *sqsadaptertest.SQS, url string) sqsQueueLen {
	v, f, d := s.Len(url)
	return sqsQueueLen{v, f, d}
}

func TestSQSSendReceiveDelete(t *testing.T) {
	t.Parallel()
	s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
	ctx := t.Context()

	sent, err := s.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    aws.String(url),
		MessageBody: aws.String(`{"runId":"r1"}`),
		MessageAttributes: map[string]types.MessageAttributeValue{
			"attempt": {DataType: aws.String("Number"), StringValue: aws.String("2")},
			"trace":   {DataType: aws.String("Binary"), BinaryValue: []byte{1, 2}},
		},
	})
	require.NoError(t, err)
	sum := md5.Sum([]byte(`{"runId":"r1"}`))
	assert.Equal(t, hex.EncodeToString(sum[:]), aws.ToString(sent.MD5OfMessageBody))
	assert.NotEmpty(t, aws.ToString(sent.MD5OfMessageAttributes))
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, aws.ToString(sent.MessageId))
	assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))

	msgs := receiveSQS(t, s, url, sqs.ReceiveMessageInput{
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
		MessageAttributeNames:       []string{"All"},
	})
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.Equal(t, aws.ToString(sent.MessageId), aws.ToString(m.MessageId))
	assert.Equal(t, `{"runId":"r1"}`, aws.ToString(m.Body))
	assert.Equal(t, aws.ToString(sent.MD5OfMessageBody), aws.ToString(m.MD5OfBody))
	assert.Equal(t, map[string]string{"ApproximateReceiveCount": "1"}, m.Attributes)
	assert.Equal(t, "2", aws.ToString(m.MessageAttributes["attempt"].StringValue))
	assert.Equal(t, []byte{1, 2}, m.MessageAttributes["trace"].BinaryValue)
	assert.Equal(t, aws.ToString(sent.MD5OfMessageAttributes), aws.ToString(m.MD5OfMessageAttributes))
	assert.NotEmpty(t, aws.ToString(m.ReceiptHandle))
	assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(s, url))
	assert.Empty(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{}), "an in-flight message is not redelivered")

	require.NoError(t, deleteSQS(ctx, s, url, m))
	assert.Equal(t, sqsQueueLen{}, sqsLen(s, url))
	assert.Empty(t, s.Messages(url))
	assert.Equal(t, sqsadaptertest.Stats{Sent: 1, Received: 1, Deleted: 1}, s.Stats())
	assert.Equal(t, map[string]int{"SendMessage": 1, "ReceiveMessage": 2, "DeleteMessage": 1}, s.Calls())
}

func TestSQSReceiveAttributes(t *testing.T) {
	t.Parallel()
	attrs := map[string]types.MessageAttributeValue{
		"flowcraft.run":  {DataType: aws.String("String"), StringValue: aws.String("r1")},
		"flowcraft.node": {DataType: aws.String("String"), StringValue: aws.String("n1")},
		"other":          {DataType: aws.String("Number.int"), StringValue: aws.String("7")},
	}
	tests := []struct {
		name      string
		sys       []types.MessageSystemAttributeName
		legacy    []types.QueueAttributeName
		attrNames []string
		wantSys   []string
		wantAttrs []string
	}{
		{name: "nothing requested"},
		{
			name:    "all system attributes",
			sys:     []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
			wantSys: []string{"ApproximateFirstReceiveTimestamp", "ApproximateReceiveCount", "SenderId", "SentTimestamp"},
		},
		{
			name:    "legacy AttributeNames",
			legacy:  []types.QueueAttributeName{"ApproximateReceiveCount", "SentTimestamp"},
			wantSys: []string{"ApproximateReceiveCount", "SentTimestamp"},
		},
		{name: "all message attributes", attrNames: []string{"All"}, wantAttrs: []string{"flowcraft.node", "flowcraft.run", "other"}},
		{name: "dot star", attrNames: []string{".*"}, wantAttrs: []string{"flowcraft.node", "flowcraft.run", "other"}},
		{name: "prefix", attrNames: []string{"flowcraft.*"}, wantAttrs: []string{"flowcraft.node", "flowcraft.run"}},
		{name: "exact name", attrNames: []string{"other", "missing"}, wantAttrs: []string{"other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			_, err := s.SendMessage(t.Context(), &sqs.SendMessageInput{
				QueueUrl: aws.String(url), MessageBody: aws.String("b"), MessageAttributes: attrs,
			})
			require.NoError(t, err)
			msgs := receiveSQS(t, s, url, sqs.ReceiveMessageInput{
				MessageSystemAttributeNames: tt.sys, AttributeNames: tt.legacy, MessageAttributeNames: tt.attrNames,
			})
			require.Len(t, msgs, 1)
			var gotSys, gotAttrs []string
			for k := range msgs[0].Attributes {
				gotSys = append(gotSys, k)
			}
			for k := range msgs[0].MessageAttributes {
				gotAttrs = append(gotAttrs, k)
			}
			assert.ElementsMatch(t, tt.wantSys, gotSys)
			assert.ElementsMatch(t, tt.wantAttrs, gotAttrs)
			assert.Equal(t, len(tt.wantAttrs) > 0, msgs[0].MD5OfMessageAttributes != nil)
		})
	}
}

func TestSQSVisibilityExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityTimeout: 100 * time.Millisecond})
		ctx := t.Context()
		id := sendSQS(t, s, url, "job")

		first := receiveOneSQS(t, s, url)
		assert.Equal(t, "1", first.Attributes["ApproximateReceiveCount"])
		firstReceived := first.Attributes["ApproximateFirstReceiveTimestamp"]

		time.Sleep(99 * time.Millisecond)
		assert.Empty(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{}), "still invisible before the timeout")
		assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(s, url))

		time.Sleep(time.Millisecond)
		assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))
		second := receiveOneSQS(t, s, url)
		assert.Equal(t, id, aws.ToString(second.MessageId))
		assert.Equal(t, "2", second.Attributes["ApproximateReceiveCount"])
		assert.Equal(t, firstReceived, second.Attributes["ApproximateFirstReceiveTimestamp"])
		assert.NotEqual(t, aws.ToString(first.ReceiptHandle), aws.ToString(second.ReceiptHandle))

		var invalid *types.ReceiptHandleIsInvalid
		require.ErrorAs(t, deleteSQS(ctx, s, url, first), &invalid, "the first handle is stale")
		require.ErrorAs(t, changeVisibilitySQS(ctx, s, url, first, 10), &invalid)
		require.NoError(t, deleteSQS(ctx, s, url, second))
		require.ErrorAs(t, deleteSQS(ctx, s, url, second), &invalid, "a deleted message's handle is invalid")
		assert.Equal(t, sqsQueueLen{}, sqsLen(s, url))
	})
}

func TestSQSExpiredHandle(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityTimeout: 50 * time.Millisecond})
		ctx := t.Context()
		sendSQS(t, s, url, "a")
		sendSQS(t, s, url, "b")
		a := receiveOneSQS(t, s, url)
		b := receiveOneSQS(t, s, url)
		time.Sleep(50 * time.Millisecond)

		var notInflight *types.MessageNotInflight
		require.ErrorAs(t, changeVisibilitySQS(ctx, s, url, a, 1), &notInflight,
			"a heartbeat after expiry reports the loss")
		require.NoError(t, deleteSQS(ctx, s, url, b), "the last handle still deletes a message nobody received again")
		assert.Equal(t, []string{"a"}, sqsBodies(s.Messages(url)))
	})
}

func sqsBodies(ms []sqsadaptertest.Message) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.Body)
	}
	return out
}

func TestSQSChangeMessageVisibility(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityUnit: 100 * time.Millisecond})
		ctx := t.Context()
		sendSQS(t, s, url, "job")

		m := receiveOneSQS(t, s, url)
		require.NoError(t, changeVisibilitySQS(ctx, s, url, m, 0))
		assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url), "0 releases the message at once")

		m = receiveOneSQS(t, s, url)
		assert.Equal(t, "2", m.Attributes["ApproximateReceiveCount"])
		require.NoError(t, changeVisibilitySQS(ctx, s, url, m, 5))
		time.Sleep(499 * time.Millisecond)
		require.NoError(t, changeVisibilitySQS(ctx, s, url, m, 3), "a heartbeat extends from now")
		time.Sleep(299 * time.Millisecond)
		assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(s, url))
		time.Sleep(time.Millisecond)
		assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))

		require.Equal(t, "InvalidParameterValue", sqsErrorCode(t, changeVisibilitySQS(ctx, s, url, m, 43201)))
		var invalid *types.ReceiptHandleIsInvalid
		require.ErrorAs(t, changeVisibilitySQS(ctx, s, url, types.Message{ReceiptHandle: aws.String("nope")}, 1), &invalid)
	})
}

func TestSQSReceiveVisibilityTimeoutParameter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityUnit: 10 * time.Millisecond})
		sendSQS(t, s, url, "job")
		require.Len(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{VisibilityTimeout: 3}), 1)
		time.Sleep(29 * time.Millisecond)
		assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(s, url))
		time.Sleep(time.Millisecond)
		assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))
	})
}

func TestSQSDelay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityUnit: 100 * time.Millisecond, Delay: time.Second})
		ctx := t.Context()
		_, err := s.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("explicit"), DelaySeconds: 2})
		require.NoError(t, err)
		sendSQS(t, s, url, "queue default")
		assert.Equal(t, sqsQueueLen{delayed: 2}, sqsLen(s, url))

		time.Sleep(200 * time.Millisecond)
		assert.Equal(t, sqsQueueLen{visible: 1, delayed: 1}, sqsLen(s, url))
		assert.Equal(t, "explicit", aws.ToString(receiveOneSQS(t, s, url).Body))
		time.Sleep(800 * time.Millisecond)
		assert.Equal(t, "queue default", aws.ToString(receiveOneSQS(t, s, url).Body))

		_, err = s.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("x"), DelaySeconds: 901})
		require.Equal(t, "InvalidParameterValue", sqsErrorCode(t, err))
	})
}

func TestSQSLongPoll(t *testing.T) {
	t.Parallel()

	t.Run("returns as soon as a message is sent", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			start := time.Now()
			done := make(chan []types.Message)
			go func() {
				done <- receiveSQS(t, s, url, sqs.ReceiveMessageInput{WaitTimeSeconds: 20, MaxNumberOfMessages: 10})
			}()
			time.Sleep(3 * time.Second)
			synctest.Wait()
			sendSQS(t, s, url, "late")
			msgs := <-done
			require.Len(t, msgs, 1)
			assert.Equal(t, "late", aws.ToString(msgs[0].Body))
			assert.Equal(t, 3*time.Second, time.Since(start))
		})
	})

	t.Run("returns empty after the wait time", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityUnit: 100 * time.Millisecond})
			start := time.Now()
			assert.Empty(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{WaitTimeSeconds: 20}))
			assert.Equal(t, 2*time.Second, time.Since(start))
		})
	})

	t.Run("queue ReceiveWaitTime applies when WaitTimeSeconds is 0", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{ReceiveWaitTime: 5 * time.Second})
			start := time.Now()
			assert.Empty(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{}))
			assert.Equal(t, 5*time.Second, time.Since(start))
		})
	})

	t.Run("wakes when an in-flight message expires", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityTimeout: 150 * time.Millisecond})
			sendSQS(t, s, url, "job")
			start := time.Now()
			done := make(chan []types.Message)
			go func() { done <- receiveSQS(t, s, url, sqs.ReceiveMessageInput{WaitTimeSeconds: 20}) }()
			synctest.Wait()
			// The waiter took the message; a second waiter gets it after expiry.
			msgs := receiveSQS(t, s, url, sqs.ReceiveMessageInput{WaitTimeSeconds: 20})
			first := <-done
			require.Len(t, first, 1)
			require.Len(t, msgs, 1)
			assert.Equal(t, 150*time.Millisecond, time.Since(start))
		})
	})

	t.Run("wakes when a delayed message becomes visible", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			start := time.Now()
			_, err := s.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("d"), DelaySeconds: 4})
			require.NoError(t, err)
			require.Len(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{WaitTimeSeconds: 20}), 1)
			assert.Equal(t, 4*time.Second, time.Since(start))
		})
	})

	t.Run("honours ctx cancellation", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			ctx, cancel := context.WithCancel(t.Context())
			start := time.Now()
			go func() {
				time.Sleep(time.Second)
				cancel()
			}()
			out, err := s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), WaitTimeSeconds: 20})
			require.ErrorIs(t, err, context.Canceled)
			assert.Nil(t, out)
			assert.Equal(t, time.Second, time.Since(start))

			sendSQS(t, s, url, "after")
			assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url), "the cancelled poll received nothing")
		})
	})

	t.Run("honours ctx deadline", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			_, err := s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), WaitTimeSeconds: 20})
			require.ErrorIs(t, err, context.DeadlineExceeded)
		})
	})

	t.Run("already cancelled ctx", func(t *testing.T) {
		t.Parallel()
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
		sendSQS(t, s, url, "x")
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url)})
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))
	})
}

func TestSQSReceiveValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   sqs.ReceiveMessageInput
	}{
		{name: "MaxNumberOfMessages 11", in: sqs.ReceiveMessageInput{MaxNumberOfMessages: 11}},
		{name: "MaxNumberOfMessages -1", in: sqs.ReceiveMessageInput{MaxNumberOfMessages: -1}},
		{name: "WaitTimeSeconds 21", in: sqs.ReceiveMessageInput{WaitTimeSeconds: 21}},
		{name: "VisibilityTimeout -1", in: sqs.ReceiveMessageInput{VisibilityTimeout: -1}},
		{name: "VisibilityTimeout 43201", in: sqs.ReceiveMessageInput{VisibilityTimeout: 43201}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			sendSQS(t, s, url, "x")
			tt.in.QueueUrl = aws.String(url)
			_, err := s.ReceiveMessage(t.Context(), &tt.in)
			require.Error(t, err)
			assert.Equal(t, "InvalidParameterValue", sqsErrorCode(t, err))
			assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))
		})
	}

	t.Run("MaxNumberOfMessages bounds the result", func(t *testing.T) {
		t.Parallel()
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
		for i := range 12 {
			sendSQS(t, s, url, strconv.Itoa(i))
		}
		assert.Len(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{}), 1, "0 means 1")
		assert.Len(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{MaxNumberOfMessages: 10}), 10)
		assert.Len(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{MaxNumberOfMessages: 10}), 1)
	})
}

func TestSQSRedrive(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := sqsadaptertest.NewSQS()
		dlq := s.CreateQueue("jobs-dlq", sqsadaptertest.QueueOptions{})
		url := s.CreateQueue("jobs", sqsadaptertest.QueueOptions{
			VisibilityTimeout: 100 * time.Millisecond, MaxReceiveCount: 3, DeadLetterQueueURL: dlq,
		})
		id := sendSQS(t, s, url, "poison")
		sendSQS(t, s, url, "good")

		for i := 1; i <= 3; i++ {
			msgs := receiveSQS(t, s, url, sqs.ReceiveMessageInput{
				MaxNumberOfMessages:         10,
				MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
			})
			require.Len(t, msgs, 2-min(i-1, 1), "attempt %d", i)
			assert.Equal(t, "poison", aws.ToString(msgs[0].Body))
			assert.Equal(t, strconv.Itoa(i), msgs[0].Attributes["ApproximateReceiveCount"])
			if i == 1 {
				require.NoError(t, deleteSQS(t.Context(), s, url, msgs[1]))
			}
			time.Sleep(100 * time.Millisecond)
		}
		assert.Empty(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{MaxNumberOfMessages: 10}),
			"the fourth receive moves the message instead of delivering it")
		assert.Equal(t, sqsQueueLen{}, sqsLen(s, url))

		moved := s.Messages(dlq)
		require.Len(t, moved, 1)
		assert.Equal(t, id, moved[0].MessageID)
		assert.Equal(t, "poison", moved[0].Body)
		assert.Equal(t, 3, moved[0].ReceiveCount)
		assert.Equal(t, sqsadaptertest.MessageVisible, moved[0].State)
		m := receiveSQS(t, s, dlq, sqs.ReceiveMessageInput{
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameDeadLetterQueueSourceArn},
		})
		require.Len(t, m, 1)
		assert.Equal(t, "arn:aws:sqs:us-east-1:000000000000:jobs", m[0].Attributes["DeadLetterQueueSourceArn"])
		assert.Equal(t, 1, s.Stats().Redriven)
	})
}

func TestSQSRedriveWakesDLQLongPoll(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := sqsadaptertest.NewSQS()
		dlq := s.CreateQueue("dlq", sqsadaptertest.QueueOptions{})
		url := s.CreateQueue("jobs", sqsadaptertest.QueueOptions{MaxReceiveCount: 1, DeadLetterQueueURL: dlq})
		sendSQS(t, s, url, "poison")
		m := receiveOneSQS(t, s, url)
		require.NoError(t, changeVisibilitySQS(t.Context(), s, url, m, 0))

		done := make(chan []types.Message)
		go func() { done <- receiveSQS(t, s, dlq, sqs.ReceiveMessageInput{WaitTimeSeconds: 20}) }()
		synctest.Wait()
		assert.Empty(t, receiveSQS(t, s, url, sqs.ReceiveMessageInput{}))
		msgs := <-done
		require.Len(t, msgs, 1)
		assert.Equal(t, "poison", aws.ToString(msgs[0].Body))
	})
}

func TestSQSSendMessageValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		max      int
		body     *string
		attrs    map[string]types.MessageAttributeValue
		wantCode string
	}{
		{name: "body at the default limit", body: aws.String(strings.Repeat("x", 262144))},
		{name: "body over the default limit", body: aws.String(strings.Repeat("x", 262145)), wantCode: "InvalidParameterValue"},
		{name: "body over a configured limit", max: 10, body: aws.String("12345678901"), wantCode: "InvalidParameterValue"},
		{
			name: "attributes count toward the limit", max: 10, body: aws.String("12345"),
			attrs:    map[string]types.MessageAttributeValue{"ab": {DataType: aws.String("String"), StringValue: aws.String("c")}},
			wantCode: "InvalidParameterValue",
		},
		{name: "missing body", wantCode: "MissingParameter"},
		{name: "empty body", body: aws.String(""), wantCode: "MissingParameter"},
		{name: "invalid character", body: aws.String("a\x00b"), wantCode: "InvalidMessageContents"},
		{name: "invalid UTF-8", body: aws.String("a\xffb"), wantCode: "InvalidMessageContents"},
		{
			name: "attribute without data type", body: aws.String("b"),
			attrs:    map[string]types.MessageAttributeValue{"a": {StringValue: aws.String("v")}},
			wantCode: "InvalidParameterValue",
		},
		{
			name: "reserved attribute name", body: aws.String("b"),
			attrs:    map[string]types.MessageAttributeValue{"AWS.x": {DataType: aws.String("String"), StringValue: aws.String("v")}},
			wantCode: "InvalidParameterValue",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{MaxMessageBytes: tt.max})
			_, err := s.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: tt.body, MessageAttributes: tt.attrs})
			if tt.wantCode == "" {
				require.NoError(t, err)
				assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(s, url))
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.wantCode, sqsErrorCode(t, err))
			assert.Equal(t, sqsQueueLen{}, sqsLen(s, url), "a rejected message is not enqueued")
			assert.Zero(t, s.Stats().Sent)
		})
	}
}

func sqsSendEntry(id, body string) types.SendMessageBatchRequestEntry {
	return types.SendMessageBatchRequestEntry{Id: aws.String(id), MessageBody: aws.String(body)}
}

func TestSQSSendMessageBatch(t *testing.T) {
	t.Parallel()
	many := make([]types.SendMessageBatchRequestEntry, 11)
	for i := range many {
		many[i] = sqsSendEntry("e"+strconv.Itoa(i), "b")
	}
	tests := []struct {
		name        string
		max         int
		entries     []types.SendMessageBatchRequestEntry
		wantErr     any // pointer to the typed error expected for the whole call
		wantOK      []string
		wantFailed  map[string]string // id → code
		wantBodies  []string
		wantDelayed int
	}{
		{
			name:       "all succeed",
			entries:    []types.SendMessageBatchRequestEntry{sqsSendEntry("a", "1"), sqsSendEntry("b", "2")},
			wantOK:     []string{"a", "b"},
			wantBodies: []string{"1", "2"},
		},
		{
			name:       "oversize entry fails alone",
			max:        8,
			entries:    []types.SendMessageBatchRequestEntry{sqsSendEntry("a", "small"), sqsSendEntry("b", "far too large")},
			wantOK:     []string{"a"},
			wantFailed: map[string]string{"b": "InvalidParameterValue"},
			wantBodies: []string{"small"},
		},
		{
			name: "bad entries fail alone",
			entries: []types.SendMessageBatchRequestEntry{
				sqsSendEntry("ok", "fine"),
				sqsSendEntry("ctl", "\x01"),
				{Id: aws.String("nobody")},
				{Id: aws.String("delay"), MessageBody: aws.String("d"), DelaySeconds: 901},
				{Id: aws.String("delayed"), MessageBody: aws.String("later"), DelaySeconds: 5},
			},
			wantOK:      []string{"ok", "delayed"},
			wantFailed:  map[string]string{"ctl": "InvalidMessageContents", "nobody": "MissingParameter", "delay": "InvalidParameterValue"},
			wantBodies:  []string{"fine", "later"},
			wantDelayed: 1,
		},
		{
			name:    "total over the limit",
			max:     8,
			entries: []types.SendMessageBatchRequestEntry{sqsSendEntry("a", "12345"), sqsSendEntry("b", "67890")},
			wantErr: new(*types.BatchRequestTooLong),
		},
		{
			name:    "repeated ids",
			entries: []types.SendMessageBatchRequestEntry{sqsSendEntry("a", "1"), sqsSendEntry("a", "2")},
			wantErr: new(*types.BatchEntryIdsNotDistinct),
		},
		{
			name:    "invalid id",
			entries: []types.SendMessageBatchRequestEntry{sqsSendEntry("a b", "1")},
			wantErr: new(*types.InvalidBatchEntryId),
		},
		{name: "no entries", wantErr: new(*types.EmptyBatchRequest)},
		{name: "eleven entries", entries: many, wantErr: new(*types.TooManyEntriesInBatchRequest)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{MaxMessageBytes: tt.max})
			out, err := s.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: tt.entries})
			if tt.wantErr != nil {
				require.ErrorAs(t, err, tt.wantErr)
				assert.Equal(t, sqsQueueLen{}, sqsLen(s, url), "a rejected batch sends nothing")
				return
			}
			require.NoError(t, err)
			var ok []string
			for _, e := range out.Successful {
				ok = append(ok, aws.ToString(e.Id))
				assert.NotEmpty(t, aws.ToString(e.MessageId))
				assert.NotEmpty(t, aws.ToString(e.MD5OfMessageBody))
			}
			failed := map[string]string{}
			for _, e := range out.Failed {
				failed[aws.ToString(e.Id)] = aws.ToString(e.Code)
				assert.True(t, e.SenderFault)
				assert.NotEmpty(t, aws.ToString(e.Message))
			}
			assert.Equal(t, tt.wantOK, ok)
			if tt.wantFailed == nil {
				tt.wantFailed = map[string]string{}
			}
			assert.Equal(t, tt.wantFailed, failed)
			assert.Equal(t, tt.wantBodies, sqsBodies(s.Messages(url)))
			assert.Equal(t, tt.wantDelayed, sqsLen(s, url).delayed)
		})
	}
}

func TestSQSDeleteMessageBatch(t *testing.T) {
	t.Parallel()
	s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
	ctx := t.Context()
	sendSQS(t, s, url, "a")
	sendSQS(t, s, url, "b")
	a := receiveOneSQS(t, s, url)
	staleB := receiveOneSQS(t, s, url)
	require.NoError(t, changeVisibilitySQS(ctx, s, url, staleB, 0))
	b := receiveOneSQS(t, s, url)

	out, err := s.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: []types.DeleteMessageBatchRequestEntry{
		{Id: aws.String("a"), ReceiptHandle: a.ReceiptHandle},
		{Id: aws.String("stale"), ReceiptHandle: staleB.ReceiptHandle},
		{Id: aws.String("bogus"), ReceiptHandle: aws.String("bogus")},
	}})
	require.NoError(t, err)
	require.Len(t, out.Successful, 1)
	assert.Equal(t, "a", aws.ToString(out.Successful[0].Id))
	require.Len(t, out.Failed, 2)
	for _, f := range out.Failed {
		assert.Equal(t, "ReceiptHandleIsInvalid", aws.ToString(f.Code), aws.ToString(f.Id))
		assert.True(t, f.SenderFault)
	}
	assert.Equal(t, []string{"b"}, sqsBodies(s.Messages(url)))

	_, err = s.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: []types.DeleteMessageBatchRequestEntry{
		{Id: aws.String("x"), ReceiptHandle: b.ReceiptHandle},
		{Id: aws.String("x"), ReceiptHandle: b.ReceiptHandle},
	}})
	var notDistinct *types.BatchEntryIdsNotDistinct
	require.ErrorAs(t, err, &notDistinct)
	assert.Equal(t, []string{"b"}, sqsBodies(s.Messages(url)), "a rejected batch deletes nothing")
	assert.Equal(t, 1, s.Stats().Deleted)
}

func TestSQSChangeMessageVisibilityBatch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
		ctx := t.Context()
		sendSQS(t, s, url, "stale")
		stale := receiveOneSQS(t, s, url)
		require.NoError(t, changeVisibilitySQS(ctx, s, url, stale, 0))
		receiveOneSQS(t, s, url) // supersedes the first handle
		sendSQS(t, s, url, "lapsed")
		lapsed := receiveSQS(t, s, url, sqs.ReceiveMessageInput{VisibilityTimeout: 1})
		require.Len(t, lapsed, 1)
		sendSQS(t, s, url, "release")
		sendSQS(t, s, url, "extend")
		release := receiveOneSQS(t, s, url)
		extend := receiveOneSQS(t, s, url)
		time.Sleep(time.Second)
		assert.Equal(t, sqsQueueLen{visible: 1, inFlight: 3}, sqsLen(s, url), "only lapsed has expired")

		out, err := s.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(url), Entries: []types.ChangeMessageVisibilityBatchRequestEntry{
			{Id: aws.String("release"), ReceiptHandle: release.ReceiptHandle, VisibilityTimeout: 0},
			{Id: aws.String("extend"), ReceiptHandle: extend.ReceiptHandle, VisibilityTimeout: 60},
			{Id: aws.String("stale"), ReceiptHandle: stale.ReceiptHandle, VisibilityTimeout: 30},
			{Id: aws.String("lapsed"), ReceiptHandle: lapsed[0].ReceiptHandle, VisibilityTimeout: 30},
			{Id: aws.String("range"), ReceiptHandle: extend.ReceiptHandle, VisibilityTimeout: 43201},
		}})
		require.NoError(t, err)
		var ok []string
		for _, e := range out.Successful {
			ok = append(ok, aws.ToString(e.Id))
		}
		failed := map[string]string{}
		for _, e := range out.Failed {
			failed[aws.ToString(e.Id)] = aws.ToString(e.Code)
			assert.True(t, e.SenderFault)
		}
		assert.Equal(t, []string{"release", "extend"}, ok)
		assert.Equal(t, map[string]string{
			"stale":  "ReceiptHandleIsInvalid",
			"lapsed": "MessageNotInflight",
			"range":  "InvalidParameterValue",
		}, failed)
		// stale and extend are in flight; lapsed and release are visible.
		assert.Equal(t, sqsQueueLen{visible: 2, inFlight: 2}, sqsLen(s, url))
	})
}

func TestSQSDuplicateDelivery(t *testing.T) {
	t.Parallel()
	s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
	ctx := t.Context()
	var duplicated atomic.Int32
	s.DuplicateDelivery = func(body string) bool {
		return body == "dup" && duplicated.Add(1) == 1
	}
	dupID := sendSQS(t, s, url, "dup")
	sendSQS(t, s, url, "single")

	first := receiveSQS(t, s, url, sqs.ReceiveMessageInput{MaxNumberOfMessages: 10})
	require.Len(t, first, 2)
	assert.Equal(t, sqsQueueLen{visible: 1, inFlight: 2}, sqsLen(s, url), "the copy is visible at once")

	copies := receiveSQS(t, s, url, sqs.ReceiveMessageInput{
		MaxNumberOfMessages:         10,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	})
	require.Len(t, copies, 1)
	c := copies[0]
	assert.Equal(t, "dup", aws.ToString(c.Body))
	assert.NotEqual(t, dupID, aws.ToString(c.MessageId), "a copy has its own MessageId")
	assert.Equal(t, "1", c.Attributes["ApproximateReceiveCount"])

	for _, m := range append(first, c) {
		require.NoError(t, deleteSQS(ctx, s, url, m), "original and copy are deleted independently")
	}
	assert.Equal(t, sqsQueueLen{}, sqsLen(s, url))
	assert.Equal(t, sqsadaptertest.Stats{Sent: 2, Received: 3, Deleted: 3, Duplicated: 1}, s.Stats())
}

var errSQSFault = errors.New("injected fault")

func TestSQSFaultHooks(t *testing.T) {
	t.Parallel()
	type env struct {
		s   *sqsadaptertest.SQS
		url string
		// in flight unless the operation under test is a send
		msg types.Message
	}
	tests := []struct {
		name  string
		op    string
		after bool // fail in AfterCall instead of BeforeCall
		call  func(t *testing.T, e env) error
		check func(t *testing.T, e env)
	}{
		{
			name: "before send: nothing sent", op: sqsadaptertest.OpSendMessage,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(e.url), MessageBody: aws.String("new")})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, []string{"old"}, sqsBodies(e.s.Messages(e.url))) },
		},
		{
			name: "after send: message sent", op: sqsadaptertest.OpSendMessage, after: true,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(e.url), MessageBody: aws.String("new")})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, []string{"old", "new"}, sqsBodies(e.s.Messages(e.url))) },
		},
		{
			name: "before batch send: nothing sent", op: sqsadaptertest.OpSendMessageBatch,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(e.url), Entries: []types.SendMessageBatchRequestEntry{sqsSendEntry("n", "new")}})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, []string{"old"}, sqsBodies(e.s.Messages(e.url))) },
		},
		{
			name: "after batch send: message sent", op: sqsadaptertest.OpSendMessageBatch, after: true,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(e.url), Entries: []types.SendMessageBatchRequestEntry{sqsSendEntry("n", "new")}})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, []string{"old", "new"}, sqsBodies(e.s.Messages(e.url))) },
		},
		{
			name: "before receive: nothing received", op: sqsadaptertest.OpReceiveMessage,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				require.NoError(t, changeVisibilitySQS(ctx, e.s, e.url, e.msg, 0))
				_, err := e.s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(e.url)})
				return err
			},
			check: func(t *testing.T, e env) {
				assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(e.s, e.url))
				assert.Equal(t, 1, e.s.Messages(e.url)[0].ReceiveCount)
			},
		},
		{
			name: "after receive: message in flight", op: sqsadaptertest.OpReceiveMessage, after: true,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				require.NoError(t, changeVisibilitySQS(ctx, e.s, e.url, e.msg, 0))
				_, err := e.s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(e.url)})
				return err
			},
			check: func(t *testing.T, e env) {
				assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(e.s, e.url))
				assert.Equal(t, 2, e.s.Messages(e.url)[0].ReceiveCount)
			},
		},
		{
			name: "before delete: message kept", op: sqsadaptertest.OpDeleteMessage,
			call:  func(t *testing.T, e env) error { return deleteSQS(t.Context(), e.s, e.url, e.msg) },
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(e.s, e.url)) },
		},
		{
			name: "after delete: message gone, retry fails", op: sqsadaptertest.OpDeleteMessage, after: true,
			call: func(t *testing.T, e env) error { return deleteSQS(t.Context(), e.s, e.url, e.msg) },
			check: func(t *testing.T, e env) {
				assert.Equal(t, sqsQueueLen{}, sqsLen(e.s, e.url))
				var invalid *types.ReceiptHandleIsInvalid
				require.ErrorAs(t, deleteSQS(t.Context(), e.s, e.url, e.msg), &invalid)
			},
		},
		{
			name: "before batch delete: message kept", op: sqsadaptertest.OpDeleteMessageBatch,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(e.url), Entries: []types.DeleteMessageBatchRequestEntry{{Id: aws.String("m"), ReceiptHandle: e.msg.ReceiptHandle}}})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(e.s, e.url)) },
		},
		{
			name: "after batch delete: message gone", op: sqsadaptertest.OpDeleteMessageBatch, after: true,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(e.url), Entries: []types.DeleteMessageBatchRequestEntry{{Id: aws.String("m"), ReceiptHandle: e.msg.ReceiptHandle}}})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{}, sqsLen(e.s, e.url)) },
		},
		{
			name: "before visibility change: still in flight", op: sqsadaptertest.OpChangeMessageVisibility,
			call:  func(t *testing.T, e env) error { return changeVisibilitySQS(t.Context(), e.s, e.url, e.msg, 0) },
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(e.s, e.url)) },
		},
		{
			name: "after visibility change: released", op: sqsadaptertest.OpChangeMessageVisibility, after: true,
			call:  func(t *testing.T, e env) error { return changeVisibilitySQS(t.Context(), e.s, e.url, e.msg, 0) },
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(e.s, e.url)) },
		},
		{
			name: "before batch visibility change: still in flight", op: sqsadaptertest.OpChangeMessageVisibilityBatch,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(e.url), Entries: []types.ChangeMessageVisibilityBatchRequestEntry{{Id: aws.String("m"), ReceiptHandle: e.msg.ReceiptHandle}}})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{inFlight: 1}, sqsLen(e.s, e.url)) },
		},
		{
			name: "after batch visibility change: released", op: sqsadaptertest.OpChangeMessageVisibilityBatch, after: true,
			call: func(t *testing.T, e env) error {
				ctx := t.Context()
				_, err := e.s.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: aws.String(e.url), Entries: []types.ChangeMessageVisibilityBatchRequestEntry{{Id: aws.String("m"), ReceiptHandle: e.msg.ReceiptHandle}}})
				return err
			},
			check: func(t *testing.T, e env) { assert.Equal(t, sqsQueueLen{visible: 1}, sqsLen(e.s, e.url)) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{})
			var armed atomic.Bool
			hook := func(op, queueURL string) error {
				if armed.Load() && op == tt.op {
					assert.Equal(t, url, queueURL)
					return fmt.Errorf("%s: %w", op, errSQSFault)
				}
				return nil
			}
			if tt.after {
				s.AfterCall = hook
			} else {
				s.BeforeCall = hook
			}
			sendSQS(t, s, url, "old")
			e := env{s: s, url: url, msg: receiveOneSQS(t, s, url)}

			armed.Store(true)
			err := tt.call(t, e)
			armed.Store(false)
			require.ErrorIs(t, err, errSQSFault)
			tt.check(t, e)
		})
	}
}

func TestSQSQueueDoesNotExist(t *testing.T) {
	t.Parallel()
	s := sqsadaptertest.NewSQS()
	s.CreateQueue("jobs", sqsadaptertest.QueueOptions{})
	url := aws.String("https://sqs.local/000000000000/missing")
	h := aws.String("handle")
	calls := map[string]func(ctx context.Context) error{
		sqsadaptertest.OpSendMessage: func(ctx context.Context) error {
			_, err := s.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: url, MessageBody: aws.String("b")})
			return err
		},
		sqsadaptertest.OpSendMessageBatch: func(ctx context.Context) error {
			_, err := s.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: url, Entries: []types.SendMessageBatchRequestEntry{sqsSendEntry("a", "b")}})
			return err
		},
		sqsadaptertest.OpReceiveMessage: func(ctx context.Context) error {
			_, err := s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, WaitTimeSeconds: 20})
			return err
		},
		sqsadaptertest.OpDeleteMessage: func(ctx context.Context) error {
			_, err := s.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: url, ReceiptHandle: h})
			return err
		},
		sqsadaptertest.OpDeleteMessageBatch: func(ctx context.Context) error {
			_, err := s.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: url, Entries: []types.DeleteMessageBatchRequestEntry{{Id: aws.String("a"), ReceiptHandle: h}}})
			return err
		},
		sqsadaptertest.OpChangeMessageVisibility: func(ctx context.Context) error {
			_, err := s.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: url, ReceiptHandle: h})
			return err
		},
		sqsadaptertest.OpChangeMessageVisibilityBatch: func(ctx context.Context) error {
			_, err := s.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: url, Entries: []types.ChangeMessageVisibilityBatchRequestEntry{{Id: aws.String("a"), ReceiptHandle: h}}})
			return err
		},
	}
	for op, call := range calls {
		t.Run(op, func(t *testing.T) {
			var missing *types.QueueDoesNotExist
			require.ErrorAs(t, call(t.Context()), &missing)
		})
	}
	want := map[string]int{}
	for op := range calls {
		want[op] = 1
	}
	assert.Equal(t, want, s.Calls(), "failed calls are counted")
}

func TestSQSPurgeAndCreateQueue(t *testing.T) {
	t.Parallel()
	s := sqsadaptertest.NewSQS()
	url := s.CreateQueue("jobs", sqsadaptertest.QueueOptions{})
	assert.Equal(t, "https://sqs.local/000000000000/jobs", url)
	sendSQS(t, s, url, "a")
	sendSQS(t, s, url, "b")
	m := receiveOneSQS(t, s, url)

	assert.Equal(t, url, s.CreateQueue("jobs", sqsadaptertest.QueueOptions{VisibilityTimeout: time.Minute}),
		"creating an existing queue returns its URL")
	assert.Equal(t, sqsQueueLen{visible: 1, inFlight: 1}, sqsLen(s, url), "and keeps its messages")

	s.Purge(url)
	assert.Equal(t, sqsQueueLen{}, sqsLen(s, url))
	var invalid *types.ReceiptHandleIsInvalid
	require.ErrorAs(t, deleteSQS(t.Context(), s, url, m), &invalid, "purge invalidates receipt handles")

	assert.Nil(t, s.Messages("https://sqs.local/000000000000/none"))
	assert.Equal(t, sqsQueueLen{}, sqsLen(s, "https://sqs.local/000000000000/none"))
	s.Purge("https://sqs.local/000000000000/none")

	for _, name := range []string{"", "has space", "queue.fifo", strings.Repeat("q", 81)} {
		assert.Panics(t, func() { s.CreateQueue(name, sqsadaptertest.QueueOptions{}) }, name)
	}
	assert.Panics(t, func() { s.CreateQueue("neg", sqsadaptertest.QueueOptions{VisibilityTimeout: -1}) })
}

func TestSQSMessageStateString(t *testing.T) {
	t.Parallel()
	for state, want := range map[sqsadaptertest.MessageState]string{
		sqsadaptertest.MessageVisible:  "visible",
		sqsadaptertest.MessageInFlight: "in-flight",
		sqsadaptertest.MessageDelayed:  "delayed",
		sqsadaptertest.MessageState(9): "MessageState(9)",
	} {
		assert.Equal(t, want, state.String())
	}
}

// TestSQSConcurrentExactlyOnce runs senders and long-polling receivers at
// once: without duplication or expiry, every message is delivered once.
// It is not parallel so that goleak sees only its own goroutines.
func TestSQSConcurrentExactlyOnce(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		senders   = 4
		perSender = 150
		receivers = 8
		total     = senders * perSender
	)
	s, url := newSQSQueue(t, sqsadaptertest.QueueOptions{VisibilityUnit: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var (
		mu       sync.Mutex
		seen     = make(map[string]int)
		deleted  atomic.Int64
		wg       sync.WaitGroup
		failures = make(chan error, senders+receivers)
	)
	for r := range receivers {
		wg.Go(func() {
			for deleted.Load() < total {
				out, err := s.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
					QueueUrl: aws.String(url), MaxNumberOfMessages: 10, WaitTimeSeconds: 5,
				})
				if errors.Is(err, context.Canceled) {
					return
				}
				if err != nil {
					failures <- err
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				entries := make([]types.DeleteMessageBatchRequestEntry, 0, len(out.Messages))
				mu.Lock()
				for i, m := range out.Messages {
					seen[aws.ToString(m.Body)]++
					entries = append(entries, types.DeleteMessageBatchRequestEntry{
						Id: aws.String(fmt.Sprintf("r%d-%d", r, i)), ReceiptHandle: m.ReceiptHandle,
					})
				}
				mu.Unlock()
				del, err := s.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
				if err != nil {
					failures <- err
					return
				}
				if len(del.Failed) > 0 {
					failures <- fmt.Errorf("delete failed: %v", aws.ToString(del.Failed[0].Code))
					return
				}
				if deleted.Add(int64(len(del.Successful))) >= total {
					cancel() // release receivers still in a long poll
				}
			}
		})
	}
	for w := range senders {
		wg.Go(func() {
			for i := 0; i < perSender; {
				if i%3 == 0 && i+5 <= perSender {
					entries := make([]types.SendMessageBatchRequestEntry, 5)
					for j := range entries {
						entries[j] = sqsSendEntry("e"+strconv.Itoa(j), fmt.Sprintf("%d/%d", w, i+j))
					}
					out, err := s.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: entries})
					if err != nil || len(out.Failed) > 0 {
						failures <- fmt.Errorf("send batch: %v", err)
						return
					}
					i += 5
					continue
				}
				if _, err := s.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(fmt.Sprintf("%d/%d", w, i))}); err != nil {
					failures <- err
					return
				}
				i++
			}
		})
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		require.NoError(t, err)
	}

	require.Len(t, seen, total)
	for body, n := range seen {
		require.Equal(t, 1, n, "message %s delivered %d times", body, n)
	}
	assert.Equal(t, sqsQueueLen{}, sqsLen(s, url))
	assert.Equal(t, sqsadaptertest.Stats{Sent: total, Received: total, Deleted: total}, s.Stats())
}

// TestSQSLimits runs the SQS limits suite, which also runs on fauxqs (see
// TestIntegrationSQSLimits in the root package).
func TestSQSLimits(t *testing.T) {
	t.Parallel()
	storetest.TestSQSLimits(t, func(*testing.T) (storetest.SQS, string) {
		s := sqsadaptertest.NewSQS()
		return s, s.CreateQueue("jobs", sqsadaptertest.QueueOptions{})
	}, nil)
}
