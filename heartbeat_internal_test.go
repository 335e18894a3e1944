package sqsadapter

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
)

// beatSQS calls onChange for each ChangeMessageVisibility.
type beatSQS struct {
	SQSClient
	onChange func()
}

func (c *beatSQS) ChangeMessageVisibility(context.Context, *sqs.ChangeMessageVisibilityInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	c.onChange()
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

// The heartbeat beats every third of the visibility timeout from the job's
// start, as a ticker would: a beat that outlasts the period is followed by
// one at once, then the schedule goes on. halt waits for a beat in
// progress, and no beat follows it.
func TestHeartbeatSchedule(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const vis = 30 * time.Second // a beat every 10s
		start := time.Now()
		var beats []time.Duration
		slow := map[int]time.Duration{1: 25 * time.Second, 5: 20 * time.Second}
		c := &beatSQS{onChange: func() {
			n := len(beats)
			beats = append(beats, time.Since(start))
			time.Sleep(slow[n])
		}}
		a := &SqsAdapter{cfg: config{visibilityTimeout: vis, sqs: c, sqsTimeUnit: time.Second}, log: slog.New(slog.DiscardHandler)}
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		h := &heartbeat{a: a, m: &types.Message{}, ctx: ctx, cancel: cancel}
		h.start()
		time.Sleep(75 * time.Second)
		h.halt()
		assert.Equal(t, 90*time.Second, time.Since(start), "halt waited for the beat in progress")
		time.Sleep(time.Minute)
		sec := time.Second
		assert.Equal(t, []time.Duration{10 * sec, 20 * sec, 45 * sec, 50 * sec, 60 * sec, 70 * sec}, beats)
	})
}
