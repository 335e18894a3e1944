package sqsadapter_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/internal/limits"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
	"github.com/flowcraft/sqsadapter/store/storetest"
)

// sqsRefused holds the characters SQS refuses in a message body that a JSON
// string can carry raw (U+FFFE, U+FFFF), next to allowed ones around them.
const sqsRefused = "a\ufffeb\uffffc \ufffd\U0001f680\u007f"

// TestSQSRefusedCharactersRoundTrip: values holding characters SQS refuses
// in a message body travel in jobs (a node's output to its successor, a
// start node's input) and reach the final context exactly.
func TestSQSRefusedCharactersRoundTrip(t *testing.T) {
	t.Parallel()
	echo := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: nc.Input}, nil
	}
	generated := map[string]any{"text": sqsRefused, "list": []any{"\uffff", int64(1)}, "key\ufffe": true}
	e := newEnv(t, envConfig{
		workers: 1,
		registry: sqsadapter.NodeRegistry{
			"echo": echo,
			"generate": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				return sqsadapter.NodeResult{Output: generated}, nil
			},
		},
		blueprints: []*sqsadapter.Blueprint{
			mustParse(t, `{"id": "output", "nodes": [
				{"id": "gen", "uses": "generate"},
				{"id": "next", "uses": "echo"}
			], "edges": [{"source": "gen", "target": "next"}]}`),
			mustParse(t, `{"id": "input", "nodes": [
				{"id": "start", "uses": "echo"},
				{"id": "next", "uses": "echo"}
			], "edges": [{"source": "start", "target": "next"}]}`),
		},
	})

	t.Run("node output", func(t *testing.T) {
		id := startRun(t, e.client, "output", nil)
		st := waitRun(t, e.client, id, 5*time.Second)
		require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		assert.Equal(t, generated, st.Context["_outputs.gen"])
		assert.Equal(t, generated, st.Context["_outputs.next"], "carried in the successor's job")
	})
	t.Run("start input", func(t *testing.T) {
		initial := map[string]any{"_inputs.start": sqsRefused, "key\uffff": sqsRefused}
		id := startRun(t, e.client, "input", initial)
		st := waitRun(t, e.client, id, 5*time.Second)
		require.Equal(t, sqsadapter.StatusCompleted, st.Status, st.Error)
		assert.Equal(t, sqsRefused, st.Context["_outputs.start"], "carried in the start job")
		assert.Equal(t, sqsRefused, st.Context["_outputs.next"])
		assert.Equal(t, sqsRefused, st.Context["key\uffff"])
		assert.Equal(t, sqsRefused, st.Context["_inputs.start"])
	})
}

// TestIDRuleParseBlueprint: the id rule (storetest.IDCases) holds for the
// blueprint id and every node id, in JSON (ParseBlueprint) and in Go
// (Blueprint.Validate, which NewSqsAdapter runs).
func TestIDRuleParseBlueprint(t *testing.T) {
	t.Parallel()
	blueprint := func(bpID, nodeID string) *sqsadapter.Blueprint {
		return &sqsadapter.Blueprint{ID: bpID, Nodes: []sqsadapter.NodeDefinition{
			{ID: "first", Uses: "work"}, {ID: nodeID, Uses: "work"},
		}, Edges: []sqsadapter.EdgeDefinition{{Source: "first", Target: nodeID}}}
	}
	parse := func(t *testing.T, bp *sqsadapter.Blueprint) error {
		b, err := json.Marshal(bp)
		require.NoError(t, err)
		_, err = sqsadapter.ParseBlueprint(b)
		return err
	}
	for _, c := range []struct {
		name string
		bp   func(id string) *sqsadapter.Blueprint
	}{
		{"blueprint id", func(id string) *sqsadapter.Blueprint { return blueprint(id, "second") }},
		{"node id", func(id string) *sqsadapter.Blueprint { return blueprint("bp", id) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Run("ParseBlueprint", func(t *testing.T) {
				storetest.TestIDRule(t, true, sqsadapter.ErrInvalidBlueprint, func(t *testing.T, id string) error {
					err := parse(t, c.bp(id))
					var be *sqsadapter.BlueprintError
					if err != nil && assert.ErrorAs(t, err, &be) && id != "" {
						// No further problem from an edge to an invalid id.
						assert.Len(t, be.Problems, 1, "one problem per id: %q", be.Problems)
					}
					return err
				})
			})
			t.Run("Validate", func(t *testing.T) {
				storetest.TestIDRule(t, false, sqsadapter.ErrInvalidBlueprint, func(t *testing.T, id string) error {
					return c.bp(id).Validate()
				})
			})
			t.Run("NewSqsAdapter", func(t *testing.T) {
				storetest.TestIDRule(t, false, sqsadapter.ErrInvalidBlueprint, func(t *testing.T, id string) error {
					q := sqsadaptertest.NewSQS()
					_, err := sqsadapter.NewSqsAdapter(
						sqsadapter.WithSQSClient(q),
						sqsadapter.WithQueueURL(q.CreateQueue("jobs", sqsadaptertest.QueueOptions{})),
						sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
						sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
						sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"work": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
							return sqsadapter.NodeResult{}, nil
						}}),
						sqsadapter.WithBlueprints(c.bp(id)),
					)
					return err
				})
			})
		})
	}
}

// TestIDRuleDecodeJob: the id rule holds for the three ids of a job.
func TestIDRuleDecodeJob(t *testing.T) {
	t.Parallel()
	for _, field := range []string{"runId", "blueprintId", "nodeId"} {
		t.Run(field, func(t *testing.T) {
			storetest.TestIDRule(t, true, sqsadapter.ErrInvalidJob, func(t *testing.T, id string) error {
				job := map[string]string{"runId": "r", "blueprintId": "b", "nodeId": "n"}
				job[field] = id
				b, err := json.Marshal(job)
				require.NoError(t, err)
				_, err = sqsadapter.DecodeJob(b)
				return err
			})
		})
	}
}

// TestIDRuleStartRun: the id rule holds for a run id given to StartRun.
func TestIDRuleStartRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{
		registry: sqsadapter.NodeRegistry{"work": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{}, nil
		}},
		blueprints: []*sqsadapter.Blueprint{mustParse(t, `{"id": "bp", "nodes": [{"id": "a", "uses": "work"}]}`)},
	})
	storetest.TestIDRule(t, false, sqsadapter.ErrInvalidOption, func(t *testing.T, id string) error {
		if id == "" {
			t.Skip("WithRunID(\"\") asks for a random run id")
		}
		got, err := e.client.StartRun(t.Context(), "bp", nil, sqsadapter.WithRunID(id))
		if err == nil {
			assert.Equal(t, id, got)
			_, err = e.contexts.GetRun(t.Context(), id)
		}
		return err
	})
}

// TestIntegrationSQSLimits runs the SQS limits suite on fauxqs, as
// sqsadaptertest's tests run it on the in-memory SQS, with a queue whose
// MaximumMessageSize is SQS's former default, the adapter's message limit.
func TestIntegrationSQSLimits(t *testing.T) {
	t.Parallel()
	endpoint := os.Getenv(sqsEndpointEnv)
	if endpoint == "" {
		t.Skipf("SQS integration test: %s is not set. To run it: "+
			"state=$(scripts/emulators.sh start) && . $state/env && go test -race -run SQSLimits .; "+
			"or run `make test`, which does all of it", sqsEndpointEnv)
	}
	client := sqsTestClient(t, endpoint)
	// fauxqs 1.9.2 refuses U+FFFE and U+FFFF as SQS does, but differs from
	// SQS in these cases.
	skip := map[string]string{
		"character U+10000":     "fauxqs refuses characters from U+10000 up (its set ends at #xFFFD); SQS accepts them",
		"character U+10FFFF":    "fauxqs refuses characters from U+10000 up (its set ends at #xFFFD); SQS accepts them",
		"batch bytes over by 1": "fauxqs checks a batch's total against 1 MiB whatever the queue's MaximumMessageSize",
	}
	storetest.TestSQSLimits(t, func(t *testing.T) (storetest.SQS, string) {
		name := "limits-" + strings.ToLower(rand.Text()[:12])
		out, err := client.CreateQueue(t.Context(), &sqs.CreateQueueInput{
			QueueName:  aws.String(name),
			Attributes: map[string]string{string(sqstypes.QueueAttributeNameMaximumMessageSize): strconv.Itoa(limits.MessageBytes)},
		})
		require.NoError(t, err)
		url := aws.ToString(out.QueueUrl)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
				t.Errorf("delete queue %s: %v", name, err)
			}
		})
		return client, url
	}, skip)
}
