// Package sqsadaptertest is the test kit of sqsadapter. New gives a test a
// running in-memory adapter bound to it (workers, queues, stores, logs to
// t.Log, stopped at cleanup) with helpers to run a blueprint and check its
// nodes; NewNodeTest calls one node function with a seeded input, params
// and run context and reads back its writes, Typed nodes included.
//
// Underneath are in-memory implementations of the parts an
// sqsadapter.SqsAdapter talks to, in the manner of net/http/httptest: an
// SQS with real visibility semantics (SQS), and a ContextStore and a
// CoordinationStore that pass the same conformance suites as the DynamoDB
// stores.
//
// They serve tests — each has fault-injection hooks (BeforeCall, AfterCall;
// SQS also DuplicateDelivery) and call counters — and embedding: a single
// process can run workflows on them with no AWS at all, as
// examples/quickstart does. Nothing is persisted.
package sqsadaptertest
