package sqsadapter_test

// The README's code, compiled and run: the order workflow of "A complete
// workflow" (Example_readmeOrder) and every row of the expression
// cheat-sheet (Example_readmeExpressions). TestReadmeSnippets checks that the
// README shows this code as it is here, and that each cheat-sheet row says
// what its expressions give.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowcraft/sqsadapter"
	"github.com/flowcraft/sqsadapter/sqsadaptertest"
)

func Example_readmeOrder() {
	// readme:blueprint
	const orderBlueprint = `{
  "id": "order",
  "nodes": [
    {"id": "fetch-order", "uses": "fetchOrder", "inputs": "orderId"},
    {"id": "stock", "uses": "checkStock"},
    {"id": "fraud", "uses": "checkFraud"},
    {"id": "decide", "uses": "decide", "config": {"joinStrategy": "all"}},
    {"id": "charge", "uses": "charge", "config": {"maxRetries": 3, "retryDelay": 100}},
    {"id": "review", "uses": "review"},
    {"id": "cancel", "uses": "cancel"}
  ],
  "edges": [
    {"source": "fetch-order", "target": "stock"},
    {"source": "fetch-order", "target": "fraud"},
    {"source": "stock", "target": "decide"},
    {"source": "fraud", "target": "decide"},
    {"source": "decide", "target": "charge", "action": "approve",
     "condition": "fetch-order.total < 500",
     "transform": "({id: fetch-order.id, amount: fetch-order.total})"},
    {"source": "decide", "target": "review", "action": "approve", "condition": "fetch-order.total >= 500"},
    {"source": "decide", "target": "cancel", "action": "reject"}
  ]
}`

	// readme:end

	// readme:registry
	type Order struct {
		ID    string   `json:"id"`
		Total float64  `json:"total"`
		Items []string `json:"items"`
	}
	orders := map[string]Order{ // stands in for a database
		"o-1": {ID: "o-1", Total: 42.5, Items: []string{"A1", "B2"}},
		"o-2": {ID: "o-2", Total: 900, Items: []string{"A1"}},
		"o-3": {ID: "o-3", Total: 15, Items: []string{"OUT-OF-STOCK"}},
	}
	registry := sqsadapter.NodeRegistry{
		// Typed converts the node's input to the function's parameter type.
		"fetchOrder": sqsadapter.Typed(func(ctx context.Context, id string) (Order, error) {
			return orders[id], nil
		}),
		"checkStock": sqsadapter.Typed(func(ctx context.Context, o Order) (bool, error) {
			return !slices.Contains(o.Items, "OUT-OF-STOCK"), nil // in stock?
		}),
		"checkFraud": sqsadapter.Typed(func(ctx context.Context, o Order) (bool, error) {
			return o.Total > 10000, nil // suspicious?
		}),
		"decide": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
			in := nc.Input.(map[string]any) // an "all" join's input: {predecessorId: output}
			if in["stock"] == true && in["fraud"] == false {
				return sqsadapter.NodeResult{Output: "approved", Action: "approve"}, nil
			}
			return sqsadapter.NodeResult{Output: "rejected", Action: "reject"}, nil
		},
		// charge's input is what its edge's transform built.
		"charge": sqsadapter.Typed(func(ctx context.Context, p struct {
			ID     string
			Amount float64
		}) (string, error) {
			// A real payment call would pass nc.IdempotencyKey() (NodeContextFrom(ctx)).
			return fmt.Sprintf("charged %.2f for %s", p.Amount, p.ID), nil
		}),
		"review": sqsadapter.Typed(func(ctx context.Context, _ any) (string, error) { return "queued for review", nil }),
		"cancel": sqsadapter.Typed(func(ctx context.Context, _ any) (string, error) { return "cancelled", nil }),
	}

	// readme:end

	// readme:run
	ctx := context.Background()
	check := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	bp, err := sqsadapter.ParseBlueprint([]byte(orderBlueprint))
	check(err)
	fake := sqsadaptertest.NewSQS() // in memory; in production: an *sqs.Client and DynamoDB stores
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(fake),
		sqsadapter.WithQueueURL(fake.CreateQueue("jobs", sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(registry),
		sqsadapter.WithBlueprints(bp),
	)
	check(err)
	go a.Run(ctx) // a worker; any number of processes can run them
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		runID, err := a.StartRun(ctx, "order", map[string]any{"orderId": id})
		check(err)
		st, err := a.WaitForRun(ctx, runID)
		check(err)
		for _, n := range []string{"charge", "review", "cancel"} {
			if out, ok := st.Context["_outputs."+n]; ok {
				fmt.Println(id, st.Status, n+":", out)
			}
		}
	}
	// readme:end
	check(a.Shutdown(ctx))
	// Output:
	// o-1 completed charge: charged 42.50 for o-1
	// o-2 completed review: queued for review
	// o-3 completed cancel: cancelled
}

// Example_readmeWaiting is the README's human approval: a wait node
// resumed with an action that routes.
func Example_readmeWaiting() {
	// readme:refundBlueprint
	const refundBlueprint = `{"id": "refund", "nodes": [
  {"id": "request", "uses": "prepare"},
  {"id": "approval", "uses": "wait", "params": {"eventName": "refund-review"}},
  {"id": "pay", "uses": "pay"}, {"id": "decline", "uses": "notify"}],
 "edges": [{"source": "request", "target": "approval"},
  {"source": "approval", "target": "pay", "action": "approve"},
  {"source": "approval", "target": "decline", "action": "reject"}]}`
	// readme:end
	ctx := context.Background()
	bp, perr := sqsadapter.ParseBlueprint([]byte(refundBlueprint))
	if perr != nil {
		log.Fatal(perr)
	}
	echo := func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
		return sqsadapter.NodeResult{Output: fmt.Sprint(nc.NodeID, " ", nc.Input)}, nil
	}
	fake := sqsadaptertest.NewSQS()
	a, aerr := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(fake),
		sqsadapter.WithQueueURL(fake.CreateQueue("jobs", sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{"prepare": echo, "pay": echo, "notify": echo}),
		sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(testLogger()),
	)
	if aerr != nil {
		log.Fatal(aerr)
	}
	go a.Run(ctx)
	order := "o-7"
	// readme:waiting
	id, _ := a.StartRun(ctx, "refund", map[string]any{"_inputs.request": order})
	st, _ := a.WaitForRun(ctx, id, sqsadapter.UntilAwaiting()) // st.Status == StatusAwaiting
	runs, next, _ := a.ListRuns(ctx, "refund", "", 50)         // running runs; GetRun says which await
	err := a.ResumeRun(ctx, id, "approval", map[string]any{"by": "ann"}, "approve")
	// readme:end
	fmt.Println(st.Status, st.Nodes["approval"].Wait.Reason, len(runs), next == "", err)
	st, _ = a.WaitForRun(ctx, id)
	fmt.Println(st.Status, st.Context["_outputs.pay"])
	fmt.Println(errors.Is(a.ResumeRun(ctx, id, "approval", nil, "reject"), sqsadapter.ErrNotWaiting))
	_ = a.Shutdown(ctx)
	// Output:
	// awaiting external_event 1 true <nil>
	// completed pay map[by:ann]
	// true
}

// Example_readmeBatch is the README's map node: one job per image.
func Example_readmeBatch() {
	// readme:thumbnailsBlueprint
	const thumbnailsBlueprint = `{"id": "thumbnails", "nodes": [
  {"id": "list", "uses": "list-images"},
  {"id": "resize", "uses": "map", "params": {"worker": "resize-one", "chunkSize": 100, "toleratedFailures": 5}},
  {"id": "publish", "uses": "publish"}],
 "edges": [{"source": "list", "target": "resize"}, {"source": "resize", "target": "publish"}]}`
	// readme:end
	ctx := context.Background()
	bp, perr := sqsadapter.ParseBlueprint([]byte(thumbnailsBlueprint))
	if perr != nil {
		log.Fatal(perr)
	}
	fake := sqsadaptertest.NewSQS()
	a, aerr := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(fake),
		sqsadapter.WithQueueURL(fake.CreateQueue("jobs", sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{
			"list-images": func(context.Context, *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				return sqsadapter.NodeResult{Output: []string{"a.png", "b.png", "broken.png", "c.png"}}, nil
			},
			"resize-one": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				if nc.Input == "broken.png" {
					return sqsadapter.NodeResult{}, sqsadapter.Permanent(errors.New("not an image"))
				}
				return sqsadapter.NodeResult{Output: fmt.Sprint("small-", nc.Input, " by ", nc.NodeID)}, nil
			},
			"publish": func(_ context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				return sqsadapter.NodeResult{Output: nc.Input}, nil
			},
		}),
		sqsadapter.WithBlueprints(bp),
		sqsadapter.WithLogger(testLogger()),
	)
	if aerr != nil {
		log.Fatal(aerr)
	}
	go a.Run(ctx)
	id, _ := a.StartRun(ctx, "thumbnails", nil)
	st, _ := a.WaitForRun(ctx, id)
	fmt.Println(st.Status, st.Nodes["resize_scatter"].BatchCompleted, st.Nodes["resize_scatter"].BatchFailed)
	for _, r := range st.Context["_outputs.publish"].([]any) {
		fmt.Println(r)
	}
	_ = a.Shutdown(ctx)
	// Output:
	// completed 3 1
	// small-a.png by resize_scatter[0]
	// small-b.png by resize_scatter[1]
	// small-c.png by resize_scatter[3]
}

// readmeExpressions are the rows of the README's cheat-sheet. Each is a
// condition or a transform on an edge from the node "route", whose output
// is {"id": "o-1", "total": 120, "ok": true}, after the node "fetch-order",
// whose output is {"id": "o-1", "total": 120, "items": ["A1", "B2"]}, in a
// run started with the context {"approved": true, "order-id": "o-1"}.
var readmeExpressions = []struct{ kind, expr string }{
	{"condition", "result.output.ok"},
	{"condition", "result.output.customer.vip"},
	{"transform", "fetch-order.total"},
	{"condition", "route.total < 500"},
	{"condition", "approved"},
	{"transform", `context["order-id"]`},
	{"condition", `fetch-order.id === "o-1"`},
	{"condition", "result.output.total !== 120"},
	{"transform", `input.note || "none"`},
	{"transform", `input.ok && "yes"`},
	{"condition", "!approved"},
	{"transform", "input.customer?.name"},
	{"transform", "input.discount ?? 0"},
	{"transform", `input.total > 100 ? "big" : "small"`},
	{"transform", "fetch-order.items.length"},
	{"condition", "input.discount < 5"},
	{"condition", "input.discount >= 5"},
	{"transform", "({id: input.id, total: input.total})"},
	{"condition", "fetch-order.items[5] == 1"},
	{"transform", "fetch-order.items[5]"},
}

// evalReadmeExpressions runs one workflow in which each row of
// readmeExpressions is on its own edge, and returns what each gives, as the
// cheat-sheet says it ("taken" or "not taken" for a condition, the JSON of
// its result for a transform), and the adapter's count of expression errors.
func evalReadmeExpressions() (gives []string, expressionErrors int64) {
	nodes := []map[string]any{
		{"id": "fetch-order", "uses": "const", "params": map[string]any{"value": map[string]any{"id": "o-1", "total": 120, "items": []string{"A1", "B2"}}}},
		{"id": "route", "uses": "const", "params": map[string]any{"value": map[string]any{"id": "o-1", "total": 120, "ok": true}}},
	}
	edges := []map[string]any{{"source": "fetch-order", "target": "route"}}
	for i, row := range readmeExpressions {
		target := fmt.Sprintf("t%d", i)
		nodes = append(nodes, map[string]any{"id": target, "uses": "echo"})
		edges = append(edges, map[string]any{"source": "route", "target": target, row.kind: row.expr})
	}
	data, err := json.Marshal(map[string]any{"id": "cheat-sheet", "nodes": nodes, "edges": edges})
	if err != nil {
		panic(err)
	}
	bp, err := sqsadapter.ParseBlueprint(data)
	if err != nil {
		panic(err)
	}
	fake := sqsadaptertest.NewSQS()
	a, err := sqsadapter.NewSqsAdapter(
		sqsadapter.WithSQSClient(fake),
		sqsadapter.WithQueueURL(fake.CreateQueue("jobs", sqsadaptertest.QueueOptions{})),
		sqsadapter.WithContextStore(sqsadaptertest.NewContextStore()),
		sqsadapter.WithCoordinationStore(sqsadaptertest.NewCoordinationStore()),
		sqsadapter.WithRegistry(sqsadapter.NodeRegistry{
			"const": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				return sqsadapter.NodeResult{Output: nc.Params["value"]}, nil
			},
			"echo": func(ctx context.Context, nc *sqsadapter.NodeContext) (sqsadapter.NodeResult, error) {
				return sqsadapter.NodeResult{Output: nc.Input}, nil
			},
		}),
		sqsadapter.WithBlueprints(bp),
		sqsadapter.WithWaitTime(time.Second),
		sqsadapter.WithLogger(testLogger()),
	)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		_ = a.Shutdown(ctx)
		<-done
	}()
	runID, err := a.StartRun(ctx, "cheat-sheet", map[string]any{"approved": true, "order-id": "o-1"})
	if err != nil {
		panic(err)
	}
	st, err := a.WaitForRun(ctx, runID)
	if err != nil {
		panic(err)
	}
	for i, row := range readmeExpressions {
		out, taken := st.Context[fmt.Sprintf("_outputs.t%d", i)]
		switch {
		case row.kind == "transform":
			js, err := json.Marshal(out)
			if err != nil {
				panic(err)
			}
			gives = append(gives, string(js))
		case taken:
			gives = append(gives, "taken")
		default:
			gives = append(gives, "not taken")
		}
	}
	return gives, a.ExpressionErrors()
}

// Every row of the README's expression cheat-sheet, evaluated on a real
// run: a condition gives whether its edge was taken, a transform the input
// it gave its target.
func Example_readmeExpressions() {
	gives, errs := evalReadmeExpressions()
	for i, row := range readmeExpressions {
		fmt.Printf("%-40s %s\n", row.expr, gives[i])
	}
	fmt.Println("ExpressionErrors():", errs)
	// Output:
	// result.output.ok                         taken
	// result.output.customer.vip               not taken
	// fetch-order.total                        120
	// route.total < 500                        taken
	// approved                                 taken
	// context["order-id"]                      "o-1"
	// fetch-order.id === "o-1"                 taken
	// result.output.total !== 120              not taken
	// input.note || "none"                     "none"
	// input.ok && "yes"                        "yes"
	// !approved                                not taken
	// input.customer?.name                     null
	// input.discount ?? 0                      0
	// input.total > 100 ? "big" : "small"      "big"
	// fetch-order.items.length                 2
	// input.discount < 5                       not taken
	// input.discount >= 5                      not taken
	// ({id: input.id, total: input.total})     {"id":"o-1","total":120}
	// fetch-order.items[5] == 1                not taken
	// fetch-order.items[5]                     null
	// ExpressionErrors(): 2
}

// TestReadmeSnippets checks that the README shows the code of this file as
// it is: each region between "// readme:<name>" and "// readme:end" here
// appears in README.md, line for line (leading white space aside); and
// each row of the cheat-sheet says what its expressions give.
func TestReadmeSnippets(t *testing.T) {
	src, err := os.ReadFile("example_readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string {
		lines := strings.Split(s, "\n")
		for i, l := range lines {
			lines[i] = strings.TrimSpace(l)
		}
		return strings.Join(lines, "\n")
	}
	doc := norm(string(readme))
	harness, err := os.ReadFile("sqsadaptertest/example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	regions := regexp.MustCompile(`(?s)// readme:(\w+)\n(.*?)\n\s*// readme:end`).FindAllStringSubmatch(string(src)+"\n"+string(harness), -1)
	if len(regions) != 7 {
		t.Fatalf("found %d readme regions in example_readme_test.go and sqsadaptertest/example_test.go, want 7", len(regions))
	}
	for _, r := range regions {
		body := strings.TrimSpace(r[2])
		if c := regexp.MustCompile("^const \\w+ = `").FindString(body); c != "" { // the README shows the JSON alone
			body = strings.TrimSuffix(strings.TrimPrefix(body, c), "`")
		}
		if !strings.Contains(doc, norm(body)) {
			t.Errorf("README.md does not show the %q code of example_readme_test.go as it is there:\n%s", r[1], body)
		}
	}
	// The cheat-sheet: each row's expressions (one or more code spans in the
	// first cell) give what its third cell says, in order.
	gives, errs := evalReadmeExpressions()
	want := map[string]string{}
	for i, row := range readmeExpressions {
		want[row.expr] = gives[i]
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		row := strings.Split(strings.ReplaceAll(line, `\|`, "\x00"), "|") // \| is a | inside a cell
		if len(row) < 5 {
			continue
		}
		unescape := func(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\x00", "|") }
		exprs := strings.Split(strings.Trim(unescape(row[1]), "`"), "`, `")
		results := strings.Split(unescape(row[3]), ", ")
		if _, ok := want[exprs[0]]; !ok {
			continue // another table
		}
		if len(results) != len(exprs) {
			t.Errorf("cheat-sheet row %q: %d expressions, %d results", exprs, len(exprs), len(results))
			continue
		}
		for i, e := range exprs {
			seen[e] = true
			if got, ok := want[e]; !ok {
				t.Errorf("cheat-sheet expression %q is not in readmeExpressions", e)
			} else if r := strings.Trim(results[i], "`"); r != got {
				t.Errorf("cheat-sheet: %s gives %s, the README says %s", e, got, r)
			}
		}
	}
	for _, row := range readmeExpressions {
		if !seen[row.expr] {
			t.Errorf("the README's cheat-sheet lacks %s", row.expr)
		}
	}
	if !strings.Contains(string(readme), fmt.Sprintf("`ExpressionErrors()` (%d here)", errs)) {
		t.Errorf("the cheat-sheet should say ExpressionErrors() is %d", errs)
	}
}
