// Command quickstart runs an order workflow end to end: a fan-out to three
// checks, an "all" join, action routing and an "any" join, executed by two
// workers. By default everything is in memory (sqsadaptertest); it prints
// the completed run's context.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

const blueprintJSON = `{
  "id": "order",
  "metadata": {"version": "1"},
  "nodes": [
    {"id": "fetch", "uses": "fetch", "inputs": "orderId"},
    {"id": "inventory", "uses": "inventory"},
    {"id": "fraud", "uses": "fraud", "config": {"maxRetries": 3, "retryDelay": 50}},
    {"id": "price", "uses": "price", "config": {"fallback": "listPrice"}},
    {"id": "listPrice", "uses": "listPrice"},
    {"id": "decide", "uses": "decide",
     "inputs": {"stock": "inventory.inStock", "score": "fraud.score", "total": "price.total"}},
    {"id": "charge", "uses": "charge"},
    {"id": "review", "uses": "review"},
    {"id": "reject", "uses": "reject"},
    {"id": "notify", "uses": "notify", "config": {"joinStrategy": "any"}}
  ],
  "edges": [
    {"source": "fetch", "target": "inventory"},
    {"source": "fetch", "target": "fraud"},
    {"source": "fetch", "target": "price", "transform": "input.items"},
    {"source": "inventory", "target": "decide"},
    {"source": "fraud", "target": "decide"},
    {"source": "price", "target": "decide"},
    {"source": "decide", "target": "charge", "action": "approve"},
    {"source": "decide", "target": "review", "action": "review"},
    {"source": "decide", "target": "reject"},
    {"source": "charge", "target": "notify"},
    {"source": "review", "target": "notify"},
    {"source": "reject", "target": "notify"}
  ]
}`

type order struct {
	ID    string  `json:"id"`
	Items []item  `json:"items"`
	Total float64 `json:"total,omitempty"`
}

type item struct {
	SKU   string  `json:"sku"`
	Price float64 `json:"price"`
}

func registry() sqsadapter.NodeRegistry {
	result := func(out any, action string) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: out, Action: action}, nil
	}
	return sqsadapter.NodeRegistry{
		"fetch": sqsadapter.Typed(func(ctx context.Context, id string) (order, error) {
			return order{ID: id, Items: []item{{"A1", 12.5}, {"B2", 30}}}, nil
		}),
		"inventory": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return result(map[string]any{"inStock": true}, "")
		},
		"fraud": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			if nc.Attempt == 1 { // a flaky dependency: the retry succeeds
				return sqsadapter.NodeResult{}, fmt.Errorf("fraud service unavailable")
			}
			return result(map[string]any{"score": 0.12}, "")
		},
		"price": sqsadapter.Typed(func(ctx context.Context, items []item) (map[string]any, error) {
			total := 0.0
			for _, it := range items {
				total += it.Price
			}
			return map[string]any{"total": total}, nil
		}),
		"listPrice": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return result(map[string]any{"total": 50.0}, "")
		},
		"decide": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			in := nc.Input.(map[string]any)
			switch {
			case in["stock"] != true:
				return result("out of stock", "")
			case in["score"].(float64) > 0.5:
				return result("suspicious", "review")
			}
			if err := nc.Set("approvedTotal", in["total"]); err != nil {
				return sqsadapter.NodeResult{}, err
			}
			return result("approved", "approve")
		},
		"charge": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			total, _, err := nc.Get(ctx, "approvedTotal")
			if err != nil {
				return sqsadapter.NodeResult{}, err
			}
			// A real charge would pass nc.IdempotencyKey() to the payment API.
			return result(map[string]any{"charged": total, "idempotencyKey": nc.IdempotencyKey()}, "")
		},
		"review": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return result("queued for review", "")
		},
		"reject": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return result("rejected", "")
		},
		"notify": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			return result(map[string]any{"sent": true}, "")
		},
	}
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bp, err := sqsadapter.ParseBlueprint([]byte(blueprintJSON))
	if err != nil {
		return err
	}

	// In-memory SQS and stores: the embedded default.
	sqs := sqsadaptertest.NewSQS()
	queueURL := sqs.CreateQueue("jobs", sqsadaptertest.QueueOptions{})
	contexts, coord := sqsadaptertest.NewContextStore(), sqsadaptertest.NewCoordinationStore()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	newAdapter := func() (*sqsadapter.SqsAdapter, error) {
		return sqsadapter.NewSqsAdapter(
			sqsadapter.WithSQSClient(sqs),
			sqsadapter.WithQueueURL(queueURL),
			sqsadapter.WithContextStore(contexts),
			sqsadapter.WithCoordinationStore(coord),
			sqsadapter.WithRegistry(registry()),
			sqsadapter.WithBlueprints(bp),
			sqsadapter.WithConcurrency(4),
			sqsadapter.WithWaitTime(time.Second),
			sqsadapter.WithLogger(logger),
		)
	}

	// Two workers, as two processes would run them.
	var workers []*sqsadapter.SqsAdapter
	errc := make(chan error, 2)
	for range 2 {
		w, err := newAdapter()
		if err != nil {
			return err
		}
		workers = append(workers, w)
		go func() { errc <- w.Run(context.Background()) }()
	}
	defer func() {
		for _, w := range workers {
			_ = w.Shutdown(context.Background())
			<-errc
		}
	}()

	client, err := newAdapter()
	if err != nil {
		return err
	}
	runID, err := client.StartRun(ctx, "order", map[string]any{"orderId": "o-1001"})
	if err != nil {
		return err
	}
	st, err := client.WaitForRun(ctx, runID)
	if err != nil {
		return err
	}
	if st.Status != sqsadapter.StatusCompleted {
		return fmt.Errorf("run %s %s: %s", runID, st.Status, st.Error)
	}
	out, err := json.MarshalIndent(st.Context, "", "  ")
	if err != nil {
		return err
	}
	fmt.Printf("run %s %s\n%s\n", runID, st.Status, out)
	return nil
}
