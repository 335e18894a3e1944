// Package chaos is a chaos harness for the sqsadapter engine: it runs many
// workflow runs on real worker processes against the SQS and DynamoDB
// emulators while it kills workers, injects faults into their API calls
// and duplicates their jobs, then checks every run against the sequential
// interpreter (internal/interp) and checks the exactly-once guarantees of
// SPEC §5 from what the emulators actually applied.
//
// # The session (Run)
//
//  1. Fresh resources, created straight on the emulators: a job queue whose
//     redrive policy dead-letters after 50 receives, its dead-letter queue,
//     and the three tables (sqsadapter.CreateTables).
//  2. Two fault-injecting proxies on 127.0.0.1, one in front of each
//     emulator (Proxy). On a share of the requests (Config.FaultRate) a
//     proxy answers an HTTP 500, a throttling error
//     (ProvisionedThroughputExceededException or ThrottlingException for
//     DynamoDB, ThrottlingException or RequestThrottled for SQS), resets the
//     connection (TCP RST), or adds latency — half of the time before
//     forwarding the request, half after, so that some writes are applied
//     while the client sees an error. Errors have the AWS JSON protocol's
//     shape (__type, and X-Amzn-Query-Error for SQS), so the SDK treats
//     them as the real ones: it retries them.
//  3. Worker processes (the chaosworker command, built from
//     internal/chaos/chaosworker without the race detector), production-
//     shaped like examples/worker, whose AWS endpoints are the proxies.
//  4. The runs of the chaos blueprint, each with its own initial context
//     (Initial), started by a client adapter that talks to the emulators
//     directly; at most Config.InFlight at a time.
//  5. Meanwhile a killer SIGKILLs a random worker at random intervals
//     (Config.KillMin–KillMax) and restarts it, and the SQS proxy sends a
//     copy of a share of the received jobs (Config.DuplicateRate) back to
//     the queue after a random delay (Duplicator). The driver's resumer,
//     an adapter of its own whose requests pass the proxies (so they see
//     faults; it is not killed), polls each run's GetRun and resumes its
//     waiting nodes as a host would, with the output and action the model
//     gives (Expect): ResumeRun for the wait node, DeliverWebhook with the
//     node's webhook id for the webhook node. Half of the nodes get one
//     call, a fifth two in a row, the rest 2–4 at once; for a share of
//     the runs (Config.CancelRate) the first resume races a CancelRun of
//     the run. It also probes what must be refused: ResumeRun of a
//     sleeping node, a delivery to an unknown webhook id.
//  6. Once every run finished (or Config.RunTimeout passed), the workers
//     drain the queue, then stop with SIGTERM.
//  7. The checks, per run: final status and context equal the
//     interpreter's (interp.Result.Check); every node output was committed
//     exactly once — for a completed run, each node the interpreter runs
//     has exactly one applied commit and no other node has one; for a
//     failed run, no node has more than one — and the final status was
//     written exactly once. A run the driver cancelled is not compared
//     with the interpreter, but its commits must be of nodes the
//     interpreter runs, once each. Batch items count as nodes here: the
//     interpreter lists each under its record id (interp.ItemRecord), so
//     each item the interpreter commits has one applied commit and a
//     failed one none; Check also compares the map node's counts of
//     committed and failed items and a batch failure's error. The waiting nodes: no node of a
//     finished run still waits; at most one of the driver's calls for a
//     node succeeded, and one that did was applied; each wait and webhook
//     node of a completed run was resumed exactly once (one applied
//     commit), one of a failed or cancelled run at most once, and not at
//     all when every call was told the run was finished; each sleep of a
//     completed run was woken by its timer, not before its wake-up time.
//     With Config.Retention, every item of a finished run and its run
//     record carry the TTL attribute ttl = finish time + Retention (read
//     raw). Then, for the session: the queue and the dead-letter queue are
//     empty, the status table's running-runs index is empty, every probe
//     was refused, and no worker exited on its own.
//
// Commits and final status writes are counted by a Ledger from the
// DynamoDB requests the emulator answered with 200, as they pass through
// the proxy — whatever the client got. So a node committed twice is seen
// even if the second commit's worker was killed before it noticed. The
// proxy follows every request but a long poll through to the emulator's
// answer, even if its client died meanwhile, so that no applied write goes
// uncounted.
//
// The summary (Summary.String) is one line: runs, kills, faults injected
// by kind, duplicates, commits, the waiting nodes resumed (hidden: by a
// call whose answer a fault replaced), the driver's calls and how many
// were refused, what was left behind, and the verdict.
// Every failed check is listed in Summary.Problems, the first few with
// diagnostics (node records, ledger, the workers' log lines).
//
// # The chaos blueprint
//
// blueprint.json, 23 nodes: "intake" fans out to "scoreA" (flaky: fails
// its first 2 attempts, 25 allowed), "scoreB" (slow: sleeps 2.5 visibility
// timeouts, so its worker must extend the message's visibility; its input
// is an edge transform), "scoreC" (always fails; its fallback
// "scoreCFallback" runs in its place) and, on a conditional edge taken for
// amounts of 500 and more (written as Flowcraft blueprints are: the node's
// own id names its output, with JavaScript's ===), "audit" → "settle" (a
// sleep of 4500 ms) → "archive" (a subflow: a child run of
// "chaos-archive", "compress" (flaky) → "store", whose output the parent
// receives as "archiveRef"). "decide" is an "all" join of the three
// scores whose "inputs" read dotted paths; it routes by action to
// "approve" → "hold" (a sleep of 0) and to "payment" (a webhook: the
// payment callback, "declined" for some amounts, which a conditional edge
// to "ledger" reads), or to "review", or by the default edge to "reject"
// → "cooldown" (a sleep of "2s"). "review" fails the run (a permanent
// error) for some inputs; otherwise "manualReview" (a wait node) is
// resumed with the action "accept" (→ "notify") or "escalate" (→
// "escalate" → "notify"). "notify" is an "any" join of the branches, and
// "finish" an "all" join of "notify", "ledger" and "archive", two of which
// are often dead. "lines" (a map node: "lines_scatter" and the gather
// "lines", in pages of 4) prices the case's 0 to 30 lines, each an item
// of "priceLine": about a third fail their first 1-2 attempts, and 3% are
// discontinued and fail for good (a permanent error); one failed item is
// tolerated, two fail the run at the gather; the results, in input order,
// go to "priced" and to "finish". "refine" (flaky: every pass fails its
// first attempt) and the loop controller "again" make a loop entered at its
// body: "again" continues while refine's output is odd, each pass refining
// the last one's output (1 to 8 passes, at most 8), and its break edge
// hands the last output to "finish". Every run that completes waits for a
// sleep and for a webhook or a person.
//
// Every node allows 25 attempts (the always-failing node 3): a crash
// during an attempt counts as an attempt (§4.3), and so does an acquire
// whose success the client did not see, so attempts are consumed by the
// chaos itself; the slack keeps that from changing a run's outcome. The
// node functions (Model) are deterministic in their input and do not
// depend on the attempt that succeeds. The one difference the checks
// allow, as the engine documents, is the message of "_catch_error" when
// the failing node's last attempt was cut short: it says the attempt was
// abandoned.
//
// # Running it
//
// TestChaosBounded runs a bounded session (30 runs, 3 workers, a kill
// every 3–6 s, 5% faults, 5% duplicates, 10% of the runs cancelled while
// one of their nodes is resumed) when SQSADAPTER_SQS_ENDPOINT and
// SQSADAPTER_DYNAMODB_ENDPOINT are set, as `make test` does; it skips
// itself otherwise. The chaos command (internal/chaos/cmd/chaos) runs a
// long one:
//
//	state=$(scripts/emulators.sh start) && . $state/env
//	go run ./internal/chaos/cmd/chaos     # 400 runs, a kill every 2-5 s, 6% faults, 5% duplicates, 5% cancels
//	SQSADAPTER_EMULATOR_STATE=$state scripts/emulators.sh stop
//
// The seed is printed; -seed replays the same runs and the same sequence
// of fault, kill and duplicate decisions (not the same interleaving). A
// session of 250 runs with a kill every 1.5–4 s passed:
//
//	chaos: seed=735143065 runs=250 (completed=230 failed=12 cancelled=8) correct=250/250 lost=0 | workers=3 kills=90 crashes=0 | requests=56866 faulted=3413 (6.0%: ...) duplicates=232 | commits=2806 duplicate-commits=0 missing-commits=0 double-finishes=0 | waits: resumed=206 (hidden=0) calls=351 (webhook=230) refused=145 sleeps=268 double-resumes=0 missed-resumes=0 waiting-at-end=0 | queue=0 dlq=0 running=0 | 4m17s | verdict=PASS
package chaos
