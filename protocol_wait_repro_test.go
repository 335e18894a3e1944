package sqsadapter_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// protoNoSend is an SQS client whose sends all fail before their effect.
type protoNoSend struct{ sqsadapter.SQSClient }

func (protoNoSend) SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	return nil, errors.New("send: injected fault")
}

// A resume whose sends all fail still succeeds: the resume is committed,
// but no job of the run is on its way, and the run stands still until the
// reconciler re-enqueues the resumed node (docs/protocol.md, "Waiting": a
// crash after ResumeNode). One reconcile pass then finishes the run.
func TestProtocolWaitResumeWithoutSendsLeftToReconciler(t *testing.T) {
	bp := mustParse(t, `{"id":"w","nodes":[{"id":"a","uses":"pass"},{"id":"w","uses":"wait"},{"id":"b","uses":"pass"}],
	 "edges":[{"source":"a","target":"w"},{"source":"w","target":"b"}]}`)
	p := newProtoSingle(t, bp)
	id, err := p.a.StartRun(t.Context(), "w", nil)
	require.NoError(t, err)
	p.handle(t, id, "w", "a")
	p.handle(t, id, "w", "w")
	st, err := p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, sqsadapter.StatusAwaiting, st.Status)

	q := sqsadaptertest.NewSQS()
	url := q.CreateQueue("other", sqsadaptertest.QueueOptions{VisibilityUnit: unit})
	r, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(protoNoSend{q}), sqsadapter.WithQueueURL(url),
		sqsadapter.WithContextStore(p.ctx), sqsadapter.WithCoordinationStore(p.coord),
		sqsadapter.WithRegistry((&protoCalls{n: map[string]int{}}).registry()), sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(testLogger()), sqsadapter.WithSQSTimeUnit(unit),
	)
	require.NoError(t, err)
	require.NoError(t, r.ResumeRun(t.Context(), id, "w", map[string]any{"ok": true}, ""), "the resume is committed")
	st, err = p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusRunning, st.Status, "not awaiting: nothing waits")
	assert.Equal(t, "completed", st.Nodes["w"].State)
	assert.NotContains(t, st.Nodes, "b", "b's job was never sent")

	time.Sleep(3 * unit)
	rs, err := p.a.Reconcile(t.Context(), 2*unit)
	require.NoError(t, err)
	assert.Positive(t, rs.Jobs, "the reconciler re-enqueues w: %+v", rs)
	p.handle(t, id, "w", "w") // the re-enqueued job: replays w's advance
	p.handle(t, id, "w", "b")
	st, err = p.a.GetRun(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, sqsadapter.StatusCompleted, st.Status)
}
