package sqsadapter

import "github.com/flowcraft/sqsadapter/internal/jsonvalue"

// Blueprint is a Flowcraft workflow definition: a DAG of nodes joined by edges.
// It is the unchanged Flowcraft JSON format; see ParseBlueprint.
type Blueprint struct {
	ID       string           `json:"id"`
	Nodes    []NodeDefinition `json:"nodes"`
	Edges    []EdgeDefinition `json:"edges"`
	Metadata map[string]any   `json:"metadata,omitempty"` // "version" is the blueprint version
}

// NodeDefinition is one step of a blueprint.
type NodeDefinition struct {
	ID string `json:"id"`
	// Uses is the NodeRegistry key of the node's implementation.
	Uses string `json:"uses"`
	// Params are passed to the node as given (NodeContext.Params).
	Params map[string]any `json:"params,omitempty"`
	// Inputs says how the node's input is resolved: a string (one key) or a
	// map of names to keys (see the package documentation, "Input resolution").
	Inputs any        `json:"inputs,omitempty"`
	Config NodeConfig `json:"config,omitempty"`
	// SourceLocation is Flowcraft's optional debugging metadata; it is kept but unused.
	SourceLocation map[string]any `json:"_sourceLocation,omitempty"`
}

// NodeConfig holds a node's execution policy.
type NodeConfig struct {
	// MaxRetries is the total number of attempts (Flowcraft semantics); values < 1 mean 1.
	MaxRetries int `json:"maxRetries,omitempty"`
	// RetryDelay is the delay before a retry, in milliseconds.
	RetryDelay int64 `json:"retryDelay,omitempty"`
	// Timeout bounds each attempt, in milliseconds; 0 means no timeout.
	Timeout int64 `json:"timeout,omitempty"`
	// Fallback is the id of a node run in this node's place when it fails for good.
	Fallback string `json:"fallback,omitempty"`
	// JoinStrategy is "all" (default) or "any" for a node with several predecessors.
	JoinStrategy string `json:"joinStrategy,omitempty"`
}

// EdgeDefinition connects two nodes.
type EdgeDefinition struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Action makes the edge eligible only when the source's result has this action.
	Action string `json:"action,omitempty"`
	// Condition is an expression that must be truthy for the edge to be taken.
	Condition string `json:"condition,omitempty"`
	// Transform is an expression computing the target's input.
	Transform string `json:"transform,omitempty"`
	// SourceLocation is Flowcraft's optional debugging metadata; it is kept but unused.
	SourceLocation map[string]any `json:"_sourceLocation,omitempty"`
}

// Version returns the blueprint version, metadata["version"], or "" when absent.
func (b *Blueprint) Version() string {
	if b == nil || b.Metadata == nil {
		return ""
	}
	switch v := b.Metadata["version"].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return jsonvalue.String(v)
	}
}
