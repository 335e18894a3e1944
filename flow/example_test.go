package flow_test

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/flow"
	"github.com/stretchr/testify/require"
)

// printEdges prints each edge of bp on a line: source -> target, then its
// action, condition and transform, if any.
func printEdges(bp *sqsadapter.Blueprint) {
	for _, e := range bp.Edges {
		line := e.Source + " -> " + e.Target
		if e.Action != "" {
			line += " [" + e.Action + "]"
		}
		if e.Condition != "" {
			line += " if " + e.Condition
		}
		if e.Transform != "" {
			line += " => " + e.Transform
		}
		fmt.Println(line)
	}
}

// The README's snippet (TestReadmeSnippet checks it is this code).
func ExampleNew() {
	// readme:flow
	bp, err := flow.New("order").
		Node("fetch-order", "fetchOrder", flow.WithInputs("orderId")).
		Node("charge", "charge", flow.WithConfig(sqsadapter.NodeConfig{MaxRetries: 3})).
		Edge("fetch-order", "charge", flow.WithCondition("fetch-order.total < 500")).
		Build() // every problem at once, then Validate
	// readme:end
	if err != nil {
		fmt.Println(err)
		return
	}
	printEdges(bp)
	// Output:
	// fetch-order -> charge if fetch-order.total < 500
}

// TestReadmeSnippet checks that the README shows ExampleNew's code as it is
// (leading white space aside).
func TestReadmeSnippet(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	region := regexp.MustCompile(`(?s)// readme:flow\n(.*?)\n\s*// readme:end`).FindSubmatch(src)
	require.NotNil(t, region, "no readme region in example_test.go")
	norm := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimSpace(l)
		}
		return strings.Join(lines, "\n")
	}
	require.Contains(t, norm(string(readme)), norm(string(region[1])), "README.md does not show ExampleNew's code")
}

// The order workflow of the README, built in Go.
func Example() {
	bp, err := flow.New("order").
		Node("fetch-order", "fetchOrder", flow.WithInputs("orderId")).
		Node("stock", "checkStock").
		Node("fraud", "checkFraud").
		Node("decide", "decide", flow.WithConfig(sqsadapter.NodeConfig{JoinStrategy: "all"})).
		Node("charge", "charge", flow.WithConfig(sqsadapter.NodeConfig{MaxRetries: 3, RetryDelay: 100})).
		Node("review", "review").
		Node("cancel", "cancel").
		Edge("fetch-order", "stock").
		Edge("fetch-order", "fraud").
		Edge("stock", "decide").
		Edge("fraud", "decide").
		Edge("decide", "charge", flow.WithAction("approve"),
			flow.WithCondition("fetch-order.total < 500"),
			flow.WithTransform("({id: fetch-order.id, amount: fetch-order.total})")).
		Edge("decide", "review", flow.WithAction("approve"), flow.WithCondition("fetch-order.total >= 500")).
		Edge("decide", "cancel", flow.WithAction("reject")).
		Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	printEdges(bp)
	// Output:
	// fetch-order -> stock
	// fetch-order -> fraud
	// stock -> decide
	// fraud -> decide
	// decide -> charge [approve] if fetch-order.total < 500 => ({id: fetch-order.id, amount: fetch-order.total})
	// decide -> review [approve] if fetch-order.total >= 500
	// decide -> cancel [reject]
}

// A batch is two nodes; edges to and from its id are led to them. As in
// Flowcraft, the rewired edges come first.
func ExampleBuilder_Batch() {
	bp, err := flow.New("thumbnails").
		Node("list", "listImages").
		Batch("resize", "resizeImage", flow.BatchOptions{InputKey: "list", OutputKey: "thumbnails", ChunkSize: 10}).
		Node("publish", "publish", flow.WithInputs("thumbnails")).
		Edge("list", "resize").
		Edge("resize", "publish").
		Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range bp.Nodes {
		fmt.Println(n.ID, n.Uses, n.Params)
	}
	printEdges(bp)
	// Output:
	// list listImages map[]
	// resize_scatter batch-scatter map[chunkSize:10 gatherNodeId:resize_gather outputKey:thumbnails workerUsesKey:resizeImage]
	// resize_gather batch-gather map[gatherNodeId:resize_gather outputKey:thumbnails]
	// publish publish map[]
	// list -> resize_scatter
	// resize_gather -> publish
	// resize_scatter -> resize_gather
}

// A loop runs its body again while its condition holds. The edges leaving
// the loop controller are its exits: Build gives them action "break" and
// the body's last output as their input.
func ExampleBuilder_Loop() {
	_, err := flow.New("count").
		Node("init", "init").
		Node("increment", "increment").
		Node("check", "check").
		Node("report", "report").
		Edge("init", "increment").
		Edge("increment", "check").
		Loop("again", flow.LoopOptions{StartNodeID: "increment", EndNodeID: "check", Condition: "counter < 3"}).
		Edge("again", "report"). // becomes again -> report [break] => context["check"]
		Build()
	if err != nil {
		panic(err)
	}
}

// A subflow, a sleep and a wait are nodes running Flowcraft's built-ins.
func ExampleBuilder_Subflow() {
	bp, err := flow.New("onboarding").
		Subflow("kyc", "kyc-check", flow.SubflowOptions{
			Inputs:  map[string]string{"customer": "customerId"},
			Outputs: map[string]string{"kycResult": "verdict"},
		}).
		Sleep("cool-off", "1d").
		Wait("approval", flow.WithParams(map[string]any{"eventName": "approved"})).
		Edge("kyc", "cool-off").
		Edge("cool-off", "approval").
		Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, n := range bp.Nodes {
		fmt.Println(n.ID, n.Uses, n.Params)
	}
	// Output:
	// kyc subflow map[blueprintId:kyc-check inputs:map[customer:customerId] outputs:map[kycResult:verdict]]
	// cool-off sleep map[duration:1d]
	// approval wait map[eventName:approved]
}

// Build reports every problem at once; each matches ErrInvalidBlueprint.
func ExampleBuilder_Build_errors() {
	_, err := flow.New("broken").
		Node("a", "first").
		Node("a", "second").
		Loop("again", flow.LoopOptions{StartNodeID: "a", EndNodeID: "missing", Condition: "a.more"}).
		Build()
	fmt.Println(errors.Is(err, sqsadapter.ErrInvalidBlueprint))
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Println(line)
	}
	// Output:
	// true
	// sqsadapter: invalid blueprint "broken": node "a" is defined more than once
	// sqsadapter: invalid blueprint "broken": loop "again": end node "missing" is not a node
}
