package sqsadapter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// A fan-out to two nodes joined by an "all" join, run by one worker on the
// in-memory SQS and stores.
func Example() {
	bp, err := sqsadapter.ParseBlueprint([]byte(`{
	  "id": "greet",
	  "nodes": [
	    {"id": "name", "uses": "name", "inputs": "who"},
	    {"id": "hello", "uses": "say", "params": {"word": "hello"}},
	    {"id": "bye", "uses": "say", "params": {"word": "bye"}},
	    {"id": "both", "uses": "join", "inputs": {"first": "hello", "second": "bye"}}
	  ],
	  "edges": [
	    {"source": "name", "target": "hello"}, {"source": "name", "target": "bye"},
	    {"source": "hello", "target": "both"}, {"source": "bye", "target": "both"}
	  ]}`))
	if err != nil {
		panic(err)
	}
	registry := sqsadapter.NodeRegistry{
		"name": sqsadapter.Typed(func(ctx context.Context, who string) (string, error) { return who, nil }),
		"say": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return sqsadapter.NodeResult{Output: fmt.Sprintf("%s, %s", nc.Params["word"], nc.Input)}, nil
		},
		"join": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			in := nc.Input.(map[string]any)
			return sqsadapter.NodeResult{Output: fmt.Sprintf("%s / %s", in["first"], in["second"])}, nil
		},
	}
	fake := sqsadaptertest.NewSQS()
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(fake),
		sqsadapter.WithQueueURL(fake.CreateQueue("jobs", sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(registry),
		sqsadapter.WithBlueprints(bp),
		sqsadapter.WithWaitTime(time.Second),
		sqsadapter.WithLogger(testLogger()),
	)
	if err != nil {
		panic(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := a.StartRun(ctx, "greet", map[string]any{"who": "Ada"})
	if err != nil {
		panic(err)
	}
	st, err := a.WaitForRun(ctx, id)
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Status, st.Context["_outputs.both"])

	_ = a.Shutdown(ctx)
	<-done
	// Output: completed hello, Ada / bye, Ada
}
