// Package store defines the two storage seams of sqsadapter — ContextStore
// (run contexts, node records, run records) and CoordinationStore (fan-in
// join records) — and the records and errors they exchange. A host uses the
// implementations (sqsadapter.DynamoDbContext and
// sqsadapter.DynamoDbCoordinationStore on AWS, package sqsadaptertest in
// memory) through the aliases sqsadapter.ContextStore and
// sqsadapter.CoordinationStore; this package is for those who implement
// another store, which must pass the conformance suite of package
// storetest. docs/protocol.md explains how the engine uses each method.
package store
