// Command sqsadapter is the operator's tool for sqsadapter runs: it
// creates the tables, starts runs and waits for them, shows a run's status
// node by node, lists running runs, cancels, resumes and deletes runs,
// runs one reconcile pass, and moves jobs from the dead-letter queue back to
// the job queue.
//
// Usage:
//
//	sqsadapter [-json] COMMAND [flags] [args]
//
//	tables create                      create the three tables (or check those that exist)
//	start -blueprint ID [-input JSON] [-run-id ID] [-wait D]
//	                                   start a run and print its id (with -wait: wait and print its status)
//	status RUN                         a run's status, with each node's state
//	wait RUN [-timeout D]              wait until the run finishes, then print its status
//	cancel RUN [-reason TEXT]          cancel a run
//	delete RUN...                      delete finished runs: their records and contexts
//	resume RUN NODE [-output JSON] [-action A]
//	                                   resume a waiting node with an output and an action
//	list [-blueprint ID] [-limit N]    list running runs, oldest first
//	reconcile [-threshold D]           one reconcile pass over runs without progress for D
//	redrive [-max N]                   move jobs from the dead-letter queue back to the job queue
//
// It reads the AWS settings the standard way (config.LoadDefaultConfig) and
// the worker's variables: SQSADAPTER_QUEUE_URL or SQSADAPTER_QUEUE_NAME
// (default flowcraft-jobs), SQSADAPTER_DLQ_URL or SQSADAPTER_DLQ_NAME
// (default <queue name>-dlq), SQSADAPTER_CONTEXT_TABLE, SQSADAPTER_STATUS_TABLE
// and SQSADAPTER_COORDINATION_TABLE (defaults flowcraft-context,
// flowcraft-status, flowcraft-coordination), and SQSADAPTER_BLUEPRINTS: a
// blueprint's JSON file, or a folder of them, which start, cancel, resume
// and reconcile need (the tool runs no node: their functions are not
// needed); and SQSADAPTER_RETENTION, the workers' Tuning.Retention (a Go
// duration such as 720h), so that a run cancel cancels expires as the
// workers' runs do. Output is a table, or JSON with -json.
//
// delete deletes each run it is given (SqsAdapter.DeleteRun): a run still
// running is refused (cancel it first), an unknown or expired one is not
// found; it prints each run's result.
//
// Exit status: 0 on success (for start -wait and wait: the run completed);
// 1 on an error, or a run that failed or was cancelled, or a run delete did
// not delete; 2 on a usage error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, envConnector(os.Getenv))
	stop()
	os.Exit(code)
}
