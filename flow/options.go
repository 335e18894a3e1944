package flow

import "github.com/flowcraft/sqsadapter"

// NodeOption sets a field of a node definition; see WithInputs, WithParams
// and WithConfig. Options apply in order, so a later one wins.
type NodeOption func(*sqsadapter.NodeDefinition)

// WithInputs sets the node's "inputs": a context key (a string) or a map of
// names to keys, as sqsadapter.NodeDefinition.Inputs describes. The value is
// converted to its JSON form (a map[string]string becomes a map[string]any).
func WithInputs(inputs any) NodeOption {
	return func(n *sqsadapter.NodeDefinition) { n.Inputs = inputs }
}

// WithParams sets the node's "params", passed to the node as given. The map
// is copied in its JSON form: integers become int64 and structs maps, as
// sqsadapter.ParseBlueprint would decode them.
func WithParams(params map[string]any) NodeOption {
	return func(n *sqsadapter.NodeDefinition) { n.Params = params }
}

// WithConfig sets the node's execution policy: retries, timeout, fallback
// and join strategy.
func WithConfig(config sqsadapter.NodeConfig) NodeOption {
	return func(n *sqsadapter.NodeDefinition) { n.Config = config }
}

// EdgeOption sets a field of an edge definition; see WithAction,
// WithCondition and WithTransform.
type EdgeOption func(*sqsadapter.EdgeDefinition)

// WithAction makes the edge eligible only when the source's result has this
// action.
func WithAction(action string) EdgeOption {
	return func(e *sqsadapter.EdgeDefinition) { e.Action = action }
}

// WithCondition sets an expression that must be truthy for the edge to be
// taken.
func WithCondition(condition string) EdgeOption {
	return func(e *sqsadapter.EdgeDefinition) { e.Condition = condition }
}

// WithTransform sets an expression computing the target's input.
func WithTransform(transform string) EdgeOption {
	return func(e *sqsadapter.EdgeDefinition) { e.Transform = transform }
}

// BatchOptions configures Builder.Batch.
type BatchOptions struct {
	// InputKey is the context key holding the array to process (required).
	InputKey string
	// OutputKey is the context key the gathered results are written to (required).
	OutputKey string
	// ChunkSize, if positive, is how many items are dispatched at a time;
	// 0 leaves it to the scatter node.
	ChunkSize int
}

// LoopOptions configures Builder.Loop.
type LoopOptions struct {
	// StartNodeID is the first node of the loop body.
	StartNodeID string
	// EndNodeID is the last node of the loop body; its output is what the
	// loop passes on, to the next iteration or out of the loop.
	EndNodeID string
	// Condition is an expression; while it is truthy the body runs again.
	Condition string
}

// SubflowOptions configures Builder.Subflow. Each map may be nil.
type SubflowOptions struct {
	// Inputs maps the subflow's initial context keys to keys of this
	// workflow's context.
	Inputs map[string]string
	// Outputs maps keys of this workflow's context to the subflow's final
	// context keys.
	Outputs map[string]string
}
