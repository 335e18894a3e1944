package sqsadaptertest_test

import (
	"context"
	"fmt"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

// A unit test of a node function, without a queue or stores: seed its input
// and the run context it reads, call it, and read back what it wrote.
func ExampleNewNodeTest() {
	charge := func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		currency, _, err := nc.Get(ctx, "currency")
		if err != nil {
			return sqsadapter.NodeResult{}, err
		}
		amount := nc.Input.(map[string]any)["amount"].(int64) // JSON-like, as in a run
		if err := nc.Set("charged", fmt.Sprintf("%d %s", amount, currency)); err != nil {
			return sqsadapter.NodeResult{}, err
		}
		return sqsadapter.NodeResult{Output: amount, Action: "paid"}, nil
	}

	n := sqsadaptertest.NewNodeTest(sqsadaptertest.NodeSeed{
		Input:   map[string]any{"amount": 40},
		Context: map[string]any{"currency": "EUR"},
	})
	res, err := n.Call(context.Background(), charge)
	fmt.Println(res.Output, res.Action, err, n.Writes())
	// Output: 40 paid <nil> map[charged:40 EUR]
}
