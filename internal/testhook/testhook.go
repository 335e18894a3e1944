// Package testhook lets package sqsadaptertest build what only package
// sqsadapter can, without the root package exporting it: the root package
// sets the variables here in an init function, and sqsadaptertest calls them.
// The variables use any where they would name a root type, since this
// package cannot import the root package that imports it.
package testhook

import "context"

// NewNodeContext makes a *sqsadapter.NodeContext (returned as nc) whose Get
// reads the node's own buffered writes and then falls back to read. It also
// returns buffered, which reports the buffered writes (sets, and deleted keys
// sorted), and withNode, which returns a ctx carrying nc as
// sqsadapter.NodeContextFrom reads it. Set by package sqsadapter.
var NewNodeContext func(read func(ctx context.Context, key string) (any, bool, error)) (
	nc any,
	buffered func() (sets map[string]any, deletes []string),
	withNode func(ctx context.Context) context.Context,
)
