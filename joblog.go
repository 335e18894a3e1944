package sqsadapter

import (
	"context"
	"log/slog"
)

// jobLogger is the logger of a job's handling: the adapter's logger with
// the job's ids, as a.log.With("run_id", …, "blueprint_id", …, "node_id", …)
// gives, except that the handler holding the ids is built only when a
// record is logged (or the logger is extended): with the level off, it costs
// one allocation per job.
func (a *SqsAdapter) jobLogger(job Job) *slog.Logger {
	return a.initJobLog(new(jobLog), job)
}

// initJobLog makes jl the logger of job's handling and returns it: a
// handling's jobRun holds it, so that it costs no allocation of its own.
func (a *SqsAdapter) initJobLog(jl *jobLog, job Job) *slog.Logger {
	jl.h = jobHandler{base: a.log.Handler(), runID: job.RunID, blueprintID: job.BlueprintID, nodeID: job.NodeID}
	jl.l = *slog.New(&jl.h)
	return &jl.l
}

// jobLog holds a job's logger and its handler in one allocation.
type jobLog struct {
	l slog.Logger
	h jobHandler
}

type jobHandler struct {
	base                       slog.Handler
	runID, blueprintID, nodeID string
}

func (h *jobHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.base.Enabled(ctx, l) }

func (h *jobHandler) Handle(ctx context.Context, r slog.Record) error { return h.with().Handle(ctx, r) }

func (h *jobHandler) WithAttrs(as []slog.Attr) slog.Handler { return h.with().WithAttrs(as) }

func (h *jobHandler) WithGroup(name string) slog.Handler { return h.with().WithGroup(name) }

// with is the handler a.log.With would have built.
func (h *jobHandler) with() slog.Handler {
	return h.base.WithAttrs([]slog.Attr{slog.String("run_id", h.runID), slog.String("blueprint_id", h.blueprintID), slog.String("node_id", h.nodeID)})
}
