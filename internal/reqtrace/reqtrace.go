// Package reqtrace writes a trace of the AWS requests of SDK clients, one
// JSON line per request, for the load model (internal/cmd/loadmodel) and
// examples/bench -trace.
package reqtrace

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
)

// Record is one line of a trace: one request (a successful one: failed
// requests are marked Err).
type Record struct {
	T     float64  `json:"t"`               // start, unix seconds
	Svc   string   `json:"svc"`             // "DynamoDB", "SQS", or "bench" for a Phase line
	Op    string   `json:"op"`              // operation, e.g. "UpdateItem"
	Items []Access `json:"items,omitempty"` // DynamoDB: the items read or written
	Queue string   `json:"queue,omitempty"` // SQS: the queue's name
	N     int      `json:"n,omitempty"`     // SQS: messages sent, received or deleted
	Err   bool     `json:"err,omitempty"`   // the request failed (a failed condition too)
	Phase *Phase   `json:"phase,omitempty"`
}

// Access is one item a DynamoDB request reads or writes. A Query names its
// partition key value only (SK is empty).
type Access struct {
	Table string `json:"table"`
	Index string `json:"index,omitempty"`
	PK    string `json:"pk"`
	SK    string `json:"sk,omitempty"`
	Write bool   `json:"w,omitempty"`
	Tx    bool   `json:"tx,omitempty"` // in a transaction: twice the capacity
}

// Phase is a line written by the program that traces: nodes executed
// between Start and End.
type Phase struct {
	Name  string  `json:"name"`
	Nodes int     `json:"nodes"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

// KeySchema names the key attributes of a table.
type KeySchema struct{ PK, SK string }

// Tracer writes Records to a writer. It is safe for concurrent use.
type Tracer struct {
	mu   sync.Mutex
	enc  *json.Encoder
	err  error
	keys map[string]KeySchema // by table name
	on   atomic.Bool
}

// New returns a Tracer writing to w, off until Enable. keys gives the key
// attributes of each table (an item of another table is traced with an
// empty key).
func New(w io.Writer, keys map[string]KeySchema) *Tracer {
	return &Tracer{enc: json.NewEncoder(w), keys: keys}
}

// Enable turns tracing on or off.
func (t *Tracer) Enable(on bool) { t.on.Store(on) }

// Err returns the first write error.
func (t *Tracer) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Write writes one record (whether tracing is on or not).
func (t *Tracer) Write(r Record) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = t.enc.Encode(r)
	}
}

// AddTo installs the tracer on an SDK middleware stack; use it in a
// client's APIOptions. It records once per operation call (not per retry).
func (t *Tracer) AddTo(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("sqsadapter.Tracer",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if !t.on.Load() {
				return next.HandleInitialize(ctx, in)
			}
			start := time.Now()
			out, md, err := next.HandleInitialize(ctx, in)
			r := Record{
				T:   float64(start.UnixNano()) / 1e9,
				Svc: awsmiddleware.GetServiceID(ctx),
				Op:  awsmiddleware.GetOperationName(ctx),
				Err: err != nil,
			}
			t.describe(&r, in.Parameters, out.Result)
			t.Write(r)
			return out, md, err
		}), middleware.After)
}

func (t *Tracer) key(table string, key map[string]types.AttributeValue) (pk, sk string) {
	ks := t.keys[table]
	return scalar(key[ks.PK]), scalar(key[ks.SK])
}

func (t *Tracer) item(table string, key map[string]types.AttributeValue, write, tx bool) Access {
	pk, sk := t.key(table, key)
	return Access{Table: table, PK: pk, SK: sk, Write: write, Tx: tx}
}

func (t *Tracer) describe(r *Record, params, result any) {
	switch in := params.(type) {
	case *dynamodb.GetItemInput:
		r.Items = append(r.Items, t.item(deref(in.TableName), in.Key, false, false))
	case *dynamodb.PutItemInput:
		r.Items = append(r.Items, t.item(deref(in.TableName), in.Item, true, false))
	case *dynamodb.UpdateItemInput:
		r.Items = append(r.Items, t.item(deref(in.TableName), in.Key, true, false))
	case *dynamodb.DeleteItemInput:
		r.Items = append(r.Items, t.item(deref(in.TableName), in.Key, true, false))
	case *dynamodb.QueryInput:
		r.Items = append(r.Items, Access{Table: deref(in.TableName), Index: deref(in.IndexName), PK: queryPK(in)})
	case *dynamodb.BatchGetItemInput:
		for _, table := range sortedKeys(in.RequestItems) {
			for _, k := range in.RequestItems[table].Keys {
				r.Items = append(r.Items, t.item(table, k, false, false))
			}
		}
	case *dynamodb.BatchWriteItemInput:
		for _, table := range sortedKeys(in.RequestItems) {
			for _, w := range in.RequestItems[table] {
				if w.PutRequest != nil {
					r.Items = append(r.Items, t.item(table, w.PutRequest.Item, true, false))
				} else if w.DeleteRequest != nil {
					r.Items = append(r.Items, t.item(table, w.DeleteRequest.Key, true, false))
				}
			}
		}
	case *dynamodb.TransactWriteItemsInput:
		for _, it := range in.TransactItems {
			switch {
			case it.Put != nil:
				r.Items = append(r.Items, t.item(deref(it.Put.TableName), it.Put.Item, true, true))
			case it.Update != nil:
				r.Items = append(r.Items, t.item(deref(it.Update.TableName), it.Update.Key, true, true))
			case it.Delete != nil:
				r.Items = append(r.Items, t.item(deref(it.Delete.TableName), it.Delete.Key, true, true))
			case it.ConditionCheck != nil:
				r.Items = append(r.Items, t.item(deref(it.ConditionCheck.TableName), it.ConditionCheck.Key, false, true))
			}
		}
	case *dynamodb.TransactGetItemsInput:
		for _, it := range in.TransactItems {
			if it.Get != nil {
				r.Items = append(r.Items, t.item(deref(it.Get.TableName), it.Get.Key, false, true))
			}
		}
	case *sqs.SendMessageInput:
		r.Queue, r.N = queueName(in.QueueUrl), 1
	case *sqs.SendMessageBatchInput:
		r.Queue, r.N = queueName(in.QueueUrl), len(in.Entries)
	case *sqs.DeleteMessageInput:
		r.Queue, r.N = queueName(in.QueueUrl), 1
	case *sqs.DeleteMessageBatchInput:
		r.Queue, r.N = queueName(in.QueueUrl), len(in.Entries)
	case *sqs.ReceiveMessageInput:
		r.Queue = queueName(in.QueueUrl)
		if out, ok := result.(*sqs.ReceiveMessageOutput); ok && out != nil {
			r.N = len(out.Messages)
		}
	case *sqs.ChangeMessageVisibilityInput:
		r.Queue, r.N = queueName(in.QueueUrl), 1
	case *sqs.ChangeMessageVisibilityBatchInput:
		r.Queue, r.N = queueName(in.QueueUrl), len(in.Entries)
	}
}

// queryPK returns the value compared for equality first in a Query's key
// condition: its partition key value (the expression builder puts the
// partition key first).
func queryPK(in *dynamodb.QueryInput) string {
	cond := deref(in.KeyConditionExpression)
	i := strings.Index(cond, "= :")
	if i < 0 {
		return ""
	}
	ph := cond[i+2:]
	if j := strings.IndexAny(ph, " )"); j >= 0 {
		ph = ph[:j]
	}
	return scalar(in.ExpressionAttributeValues[ph])
}

func queueName(u *string) string {
	s := deref(u)
	if p, err := url.Parse(s); err == nil && p.Path != "" {
		return path.Base(p.Path)
	}
	return s
}

func scalar(av types.AttributeValue) string {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return v.Value
	case *types.AttributeValueMemberN:
		return v.Value
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
