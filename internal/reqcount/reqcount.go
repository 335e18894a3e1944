// Package reqcount counts the AWS API requests of SDK clients and the
// DynamoDB capacity they consume: the measuring tool of examples/bench and
// BENCHMARKS.md.
package reqcount

import (
	"context"
	"maps"
	"sort"
	"sync"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
)

// RequestCounter counts the AWS API requests an SDK client sends, by
// service and operation — each HTTP attempt, retries included, since AWS
// bills each — and the DynamoDB capacity units they consume. Add it to
// clients with their APIOptions:
//
//	counter := reqcount.NewRequestCounter()
//	cfg.APIOptions = append(cfg.APIOptions, counter.AddTo)
//
// It asks DynamoDB for ReturnConsumedCapacity=TOTAL on every request that
// does not already ask for it. It is safe for concurrent use.
type RequestCounter struct {
	mu       sync.Mutex
	requests map[string]int64
	rcu, wcu float64
}

// RequestCounts is a snapshot of a RequestCounter.
type RequestCounts struct {
	// Requests by "Service.Operation", e.g. "SQS.ReceiveMessage".
	Requests map[string]int64
	// ReadCapacityUnits and WriteCapacityUnits consumed by DynamoDB requests.
	ReadCapacityUnits, WriteCapacityUnits float64
}

// Total is the number of requests of every operation.
func (c RequestCounts) Total() int64 {
	var n int64
	for _, v := range c.Requests {
		n += v
	}
	return n
}

// Service is the number of requests to one service ("SQS", "DynamoDB").
func (c RequestCounts) Service(id string) int64 {
	var n int64
	for k, v := range c.Requests {
		if len(k) > len(id) && k[:len(id)] == id && k[len(id)] == '.' {
			n += v
		}
	}
	return n
}

// Operations lists the operations counted, sorted.
func (c RequestCounts) Operations() []string {
	ops := make([]string, 0, len(c.Requests))
	for k := range c.Requests {
		ops = append(ops, k)
	}
	sort.Strings(ops)
	return ops
}

// NewRequestCounter returns a counter at zero.
func NewRequestCounter() *RequestCounter {
	return &RequestCounter{requests: make(map[string]int64)}
}

// AddTo installs the counter on an SDK middleware stack; use it in a
// client's APIOptions.
func (c *RequestCounter) AddTo(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("sqsadapter.RequestCounter.capacity",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			askCapacity(in.Parameters)
			out, md, err := next.HandleInitialize(ctx, in)
			if err == nil {
				c.addCapacity(out.Result)
			}
			return out, md, err
		}), middleware.Before); err != nil {
		return err
	}
	// Finalize, after the retry middleware: once per attempt.
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("sqsadapter.RequestCounter.attempt",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			c.mu.Lock()
			c.requests[awsmiddleware.GetServiceID(ctx)+"."+awsmiddleware.GetOperationName(ctx)]++
			c.mu.Unlock()
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}

// Snapshot returns the counts so far.
func (c *RequestCounter) Snapshot() RequestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return RequestCounts{Requests: maps.Clone(c.requests), ReadCapacityUnits: c.rcu, WriteCapacityUnits: c.wcu}
}

// Reset sets every count back to zero.
func (c *RequestCounter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.requests)
	c.rcu, c.wcu = 0, 0
}

func askCapacity(params any) {
	const total = types.ReturnConsumedCapacityTotal
	switch in := params.(type) {
	case *dynamodb.GetItemInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.PutItemInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.UpdateItemInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.DeleteItemInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.QueryInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.ScanInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.BatchGetItemInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.BatchWriteItemInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.TransactWriteItemsInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	case *dynamodb.TransactGetItemsInput:
		in.ReturnConsumedCapacity = or(in.ReturnConsumedCapacity, total)
	}
}

func or(v, def types.ReturnConsumedCapacity) types.ReturnConsumedCapacity {
	if v == "" {
		return def
	}
	return v
}

func (c *RequestCounter) addCapacity(result any) {
	var caps []types.ConsumedCapacity
	switch out := result.(type) {
	case *dynamodb.GetItemOutput:
		caps = one(out.ConsumedCapacity)
	case *dynamodb.PutItemOutput:
		caps = one(out.ConsumedCapacity)
	case *dynamodb.UpdateItemOutput:
		caps = one(out.ConsumedCapacity)
	case *dynamodb.DeleteItemOutput:
		caps = one(out.ConsumedCapacity)
	case *dynamodb.QueryOutput:
		caps = one(out.ConsumedCapacity)
	case *dynamodb.ScanOutput:
		caps = one(out.ConsumedCapacity)
	case *dynamodb.BatchGetItemOutput:
		caps = out.ConsumedCapacity
	case *dynamodb.BatchWriteItemOutput:
		caps = out.ConsumedCapacity
	case *dynamodb.TransactWriteItemsOutput:
		caps = out.ConsumedCapacity
	case *dynamodb.TransactGetItemsOutput:
		caps = out.ConsumedCapacity
	}
	if len(caps) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range caps {
		r, w := deref(cc.ReadCapacityUnits), deref(cc.WriteCapacityUnits)
		if r == 0 && w == 0 { // some responses give only the total
			if _, isRead := result.(*dynamodb.GetItemOutput); isRead {
				r = deref(cc.CapacityUnits)
			} else if _, isRead := result.(*dynamodb.BatchGetItemOutput); isRead {
				r = deref(cc.CapacityUnits)
			} else if _, isRead := result.(*dynamodb.QueryOutput); isRead {
				r = deref(cc.CapacityUnits)
			} else {
				w = deref(cc.CapacityUnits)
			}
		}
		c.rcu += r
		c.wcu += w
	}
}

func one(c *types.ConsumedCapacity) []types.ConsumedCapacity {
	if c == nil {
		return nil
	}
	return []types.ConsumedCapacity{*c}
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}
