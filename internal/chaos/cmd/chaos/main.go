// Command chaos runs a chaos session of the sqsadapter engine against the
// SQS and DynamoDB emulators (see internal/chaos): worker processes behind
// a fault-injecting proxy, killed and restarted at random, every run
// checked against the sequential interpreter. It prints progress on stderr,
// the problems found, and one summary line on stdout; it exits 0 when every
// check passed, 1 when one failed, 2 on a usage or setup error.
//
// Start the emulators first and run it from the module:
//
//	state=$(scripts/emulators.sh start) && . $state/env
//	go run ./internal/chaos/cmd/chaos     # 400 runs, a kill every 2-5 s, 6% faults, 5% duplicates, 5% cancels
//	SQSADAPTER_EMULATOR_STATE=$state scripts/emulators.sh stop
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/flowcraft/sqsadapter/internal/chaos"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		cfg       chaos.Config
		killEvery string
	)
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed of the runs' inputs and of the fault, kill and duplicate decisions (default: random, printed)")
	flag.IntVar(&cfg.Runs, "runs", 400, "runs to execute")
	flag.IntVar(&cfg.InFlight, "in-flight", 40, "runs in flight at once")
	flag.IntVar(&cfg.Workers, "workers", 3, "worker processes")
	flag.IntVar(&cfg.Concurrency, "concurrency", 8, "jobs in flight per worker")
	flag.DurationVar(&cfg.VisibilityTimeout, "visibility-timeout", 3*time.Second, "workers' visibility timeout and node lease")
	flag.Float64Var(&cfg.SlowFactor, "slow-factor", 2.5, "how long the slow node sleeps, in visibility timeouts")
	flag.StringVar(&killEvery, "kill-every", "2s-5s", "random interval between worker kills, MIN-MAX (\"0\": no kills)")
	flag.Float64Var(&cfg.FaultRate, "faults", 0.06, "share of proxied requests that get a fault")
	flag.DurationVar(&cfg.MaxLatency, "max-latency", 800*time.Millisecond, "longest latency fault")
	flag.Float64Var(&cfg.DuplicateRate, "duplicates", 0.05, "share of received messages sent again")
	flag.Float64Var(&cfg.CancelRate, "cancels", 0.05, "share of runs cancelled while the driver resumes one of their waiting nodes")
	flag.DurationVar(&cfg.RunTimeout, "run-timeout", 30*time.Minute, "how long the runs may take in all")
	flag.DurationVar(&cfg.DrainTimeout, "drain-timeout", 2*time.Minute, "how long the queue may take to drain once the runs are done")
	flag.StringVar(&cfg.WorkDir, "work-dir", "", "folder for the worker binary and logs (default: a temporary folder, kept on failure)")
	flag.StringVar(&cfg.LogLevel, "log-level", "warn", "workers' log level")
	flag.BoolVar(&cfg.KeepResources, "keep", false, "keep the queues and tables")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: chaos [flags]; see -help")
		return 2
	}
	if killEvery != "0" {
		lo, hi, ok := strings.Cut(killEvery, "-")
		var err1, err2 error
		cfg.KillMin, err1 = time.ParseDuration(lo)
		cfg.KillMax, err2 = time.ParseDuration(hi)
		if !ok || err1 != nil || err2 != nil {
			fmt.Fprintf(os.Stderr, "chaos: -kill-every %q: want MIN-MAX, e.g. 2s-6s\n", killEvery)
			return 2
		}
	}
	cfg.SQSEndpoint = os.Getenv("SQSADAPTER_SQS_ENDPOINT")
	cfg.DynamoDBEndpoint = os.Getenv("SQSADAPTER_DYNAMODB_ENDPOINT")
	if cfg.SQSEndpoint == "" || cfg.DynamoDBEndpoint == "" {
		fmt.Fprintln(os.Stderr, "chaos: SQSADAPTER_SQS_ENDPOINT and SQSADAPTER_DYNAMODB_ENDPOINT must point at the emulators: "+
			"state=$(scripts/emulators.sh start) && . $state/env")
		return 2
	}
	cfg.Logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s chaos: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 2
	}
	for _, p := range sum.Problems {
		fmt.Fprintf(os.Stderr, "PROBLEM: %s\n", p)
	}
	if !sum.OK() {
		fmt.Fprintf(os.Stderr, "chaos: worker logs in %s\n", sum.LogDir)
	}
	fmt.Println(sum)
	if !sum.OK() {
		return 1
	}
	return 0
}
