package reqtrace

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

func TestDescribe(t *testing.T) {
	tr := New(&bytes.Buffer{}, map[string]KeySchema{"ctx": {PK: "runId", SK: "key"}, "st": {PK: "runId"}})
	for name, c := range map[string]struct {
		params, result any
		want           Record
	}{
		"transaction": {
			params: &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
				{Put: &types.Put{TableName: aws.String("st"), Item: map[string]types.AttributeValue{"runId": s("r"), "status": s("running")}}},
				{Update: &types.Update{TableName: aws.String("ctx"), Key: map[string]types.AttributeValue{"runId": s("r"), "key": s("_outputs.a")}}},
			}},
			want: Record{Items: []Access{{Table: "st", PK: "r", Write: true, Tx: true}, {Table: "ctx", PK: "r", SK: "_outputs.a", Write: true, Tx: true}}},
		},
		"query": {
			params: &dynamodb.QueryInput{TableName: aws.String("st"), IndexName: aws.String("running-runs"),
				KeyConditionExpression:    aws.String("(#0 = :0) AND (#1 < :1)"),
				ExpressionAttributeValues: map[string]types.AttributeValue{":0": s("running#3"), ":1": &types.AttributeValueMemberN{Value: "5"}}},
			want: Record{Items: []Access{{Table: "st", Index: "running-runs", PK: "running#3"}}},
		},
		"receive": {
			params: &sqs.ReceiveMessageInput{QueueUrl: aws.String("http://sqs.us-east-1.localhost:9/000000000000/jobs")},
			result: &sqs.ReceiveMessageOutput{Messages: make([]sqstypes.Message, 3)},
			want:   Record{Queue: "jobs", N: 3},
		},
	} {
		t.Run(name, func(t *testing.T) {
			var r Record
			tr.describe(&r, c.params, c.result)
			assert.Equal(t, c.want, r)
		})
	}
}

func TestWrite(t *testing.T) {
	var b bytes.Buffer
	tr := New(&b, nil)
	tr.Write(Record{T: 1.5, Svc: "SQS", Op: "SendMessageBatch", Queue: "q", N: 2})
	require.NoError(t, tr.Err())
	var r Record
	require.NoError(t, json.Unmarshal(b.Bytes(), &r))
	assert.Equal(t, Record{T: 1.5, Svc: "SQS", Op: "SendMessageBatch", Queue: "q", N: 2}, r)
}
