package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowcraft/sqsadapter/internal/reqtrace"
	"github.com/flowcraft/sqsadapter/internal/runindex"
)

// syntheticTrace: in second 100, 4 runs start (one run record write each,
// r0 in a transaction) and a join of run r0 receives 3 arrivals; in second
// 101 the runs finish. 5 messages are received, 2 deleted, 3 more deleted
// later.
func syntheticTrace(t *testing.T) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	write := func(r reqtrace.Record) { require.NoError(t, enc.Encode(r)) }
	for i, run := range []string{"r0", "r1", "r2", "r3"} {
		write(reqtrace.Record{T: 100.1 + float64(i)/100, Svc: "DynamoDB", Op: "PutItem", Items: []reqtrace.Access{{Table: "b-status", PK: run, Write: true, Tx: run == "r0"}}})
		write(reqtrace.Record{T: 101.5, Svc: "DynamoDB", Op: "UpdateItem", Items: []reqtrace.Access{{Table: "b-status", PK: run, Write: true}}})
	}
	for range 3 {
		write(reqtrace.Record{T: 100.5, Svc: "DynamoDB", Op: "UpdateItem", Items: []reqtrace.Access{{Table: "b-coordination", PK: "flowcraft:fanin:r0:join", Write: true}}})
	}
	write(reqtrace.Record{T: 100.6, Svc: "DynamoDB", Op: "TransactWriteItems", Items: []reqtrace.Access{
		{Table: "b-context", PK: "r0", SK: "_outputs.a", Write: true, Tx: true},
		{Table: "b-context", PK: "r0", SK: "k", Write: true, Tx: true},
	}})
	write(reqtrace.Record{T: 100.7, Svc: "DynamoDB", Op: "Query", Items: []reqtrace.Access{{Table: "b-status", Index: "running-runs", PK: "running#3"}}})
	write(reqtrace.Record{T: 100.2, Svc: "SQS", Op: "ReceiveMessage", Queue: "q", N: 5})
	write(reqtrace.Record{T: 100.3, Svc: "SQS", Op: "DeleteMessageBatch", Queue: "q", N: 2})
	write(reqtrace.Record{T: 100.4, Svc: "SQS", Op: "ReceiveMessage", Queue: "q"})
	write(reqtrace.Record{T: 101.0, Svc: "SQS", Op: "DeleteMessageBatch", Queue: "q", N: 3})
	write(reqtrace.Record{T: 102, Svc: "bench", Op: "phase", Phase: &reqtrace.Phase{Name: "x", Nodes: 20, Start: 100, End: 102}})
	return b.Bytes()
}

func TestAnalyze(t *testing.T) {
	trace := syntheticTrace(t)
	m, err := analyze(bytes.NewReader(trace), runindex.Shards)
	require.NoError(t, err)
	assert.Equal(t, 17, m.requests)
	nodes, nps := m.nodesPerSecond()
	assert.Equal(t, 20, nodes)
	assert.InDelta(t, 10, nps, 1e-9)

	join := m.partitions["b-coordination flowcraft:fanin:r0:join"]
	require.NotNil(t, join)
	assert.Equal(t, kindCoord, join.kind)
	assert.Equal(t, 3.0, join.write.peak(), "3 arrivals in one second")

	r0 := m.partitions["b-status r0"]
	require.NotNil(t, r0)
	assert.Equal(t, kindRun, r0.kind)
	assert.Equal(t, 2.0, r0.write.peak(), "a transactional write is 2 units")
	assert.Equal(t, 3.0, r0.write.total)

	node := m.items["b-context r0 _outputs.a"]
	require.NotNil(t, node)
	assert.Equal(t, kindNode, node.kind)
	assert.Equal(t, 4.0, m.partitions["b-context r0"].write.total, "both items of the partition")

	// Each run record write also writes the run's index partition.
	var indexWrites float64
	for name, l := range m.partitions {
		if l.kind == kindIndex && strings.HasPrefix(name, indexTableName) {
			indexWrites += l.write.total
		}
	}
	assert.Equal(t, 8.0, indexWrites)
	assert.Equal(t, 1.0, m.partitions["b-status/running-runs running#3"].read.total, "a Query reads its partition")
	shard := m.partitions[indexTableName+" "+runindex.Key("r1")]
	require.NotNil(t, shard, "r1's shard")

	q := m.queues["q"]
	require.NotNil(t, q)
	assert.Equal(t, 5, q.peakInFlight)
	assert.Equal(t, 0, q.inFlight)
	assert.Equal(t, 1, q.emptyReceives)

	// One partition key value: every run start and finish on it.
	single, err := analyze(bytes.NewReader(trace), 1)
	require.NoError(t, err)
	one := single.partitions[indexTableName+" running"]
	require.NotNil(t, one)
	assert.Equal(t, 4.0, one.write.peak())
	assert.Equal(t, 8.0, one.write.total)

	var out bytes.Buffer
	m.print(&out, 3, 10000)
	assert.Contains(t, out.String(), "flowcraft:fanin:r0:join")
	assert.Contains(t, out.String(), "projected to 10000 nodes/s")
	assert.Contains(t, out.String(), "queue q: 5000 messages in flight")
}

func TestAnalyzeErrors(t *testing.T) {
	_, err := analyze(strings.NewReader(""), 16)
	require.Error(t, err)
	_, err = analyze(strings.NewReader("{not json\n"), 16)
	require.ErrorContains(t, err, "line 1")
}
