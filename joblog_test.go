package sqsadapter

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A job's logger writes what the adapter's logger extended with the job's
// ids writes, and allocates nothing when its level is off.
func TestJobLogger(t *testing.T) {
	noTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	job := Job{RunID: "r 1", BlueprintID: "bp", NodeID: "n"}
	use := func(l *slog.Logger) {
		ctx := context.Background()
		l.DebugContext(ctx, "hidden", "k", 1)
		l.InfoContext(ctx, "shown", "k", 1)
		l.With("fallback", "fb").WarnContext(ctx, "with", "err", "e")
		l.WithGroup("g").ErrorContext(ctx, "group", "k", 2)
	}
	var want, got bytes.Buffer
	h := func(b *bytes.Buffer) slog.Handler {
		return slog.NewJSONHandler(b, &slog.HandlerOptions{ReplaceAttr: noTime})
	}
	use(slog.New(h(&want)).With("run_id", job.RunID, "blueprint_id", job.BlueprintID, "node_id", job.NodeID))
	a := &SqsAdapter{log: slog.New(h(&got))}
	use(a.jobLogger(job))
	assert.Equal(t, want.String(), got.String())

	a.log = slog.New(slog.NewTextHandler(&got, &slog.HandlerOptions{Level: slog.LevelWarn}))
	allocs := testing.AllocsPerRun(100, func() {
		a.jobLogger(job).InfoContext(context.Background(), "off")
	})
	assert.LessOrEqual(t, allocs, 1.0)
}
