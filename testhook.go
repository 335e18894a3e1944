package sqsadapter

import (
	"context"

	"github.com/flowcraft/sqsadapter/internal/testhook"
)

// init lets package sqsadaptertest build a NodeContext outside a run, for
// unit tests of node functions, without this package exporting a
// constructor (see internal/testhook).
func init() {
	testhook.NewNodeContext = func(read func(ctx context.Context, key string) (any, bool, error)) (
		any, func() (map[string]any, []string), func(context.Context) context.Context,
	) {
		nc := &NodeContext{read: read}
		withNode := func(ctx context.Context) context.Context {
			return context.WithValue(ctx, nodeContextKey{}, nc)
		}
		return nc, nc.buffered, withNode
	}
}
