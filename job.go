package sqsadapter

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Job is one node of one run: the body of an SQS message, in the Flowcraft
// job format {"runId", "blueprintId", "nodeId"} plus optional fields.
type Job struct {
	RunID       string `json:"runId"`
	BlueprintID string `json:"blueprintId"`
	NodeID      string `json:"nodeId"`
	// BlueprintVersion is the version of the run's blueprint. Absent in
	// foreign jobs; the worker then reads it from the run record.
	BlueprintVersion string `json:"blueprintVersion,omitempty"`
	// Input is the node's input carried in the message (JSON). When absent
	// the node's input is resolved from the run context.
	Input json.RawMessage `json:"input,omitempty"`
}

const maxIDLength = 512

// DecodeJob parses and validates a job message body. Unknown fields are
// ignored; a missing or malformed required field is an error matching
// ErrInvalidJob.
func DecodeJob(body []byte) (Job, error) {
	var j Job
	if err := json.Unmarshal(body, &j); err != nil {
		return Job{}, fmt.Errorf("%w: %v", ErrInvalidJob, err)
	}
	return j, j.validate()
}

func (j Job) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"runId", j.RunID}, {"blueprintId", j.BlueprintID}, {"nodeId", j.NodeID}} {
		switch {
		case strings.TrimSpace(f.v) == "":
			missing = append(missing, f.name+" is missing")
		case len(f.v) > maxIDLength:
			missing = append(missing, fmt.Sprintf("%s is longer than %d bytes", f.name, maxIDLength))
		}
	}
	if len(j.Input) > 0 && !json.Valid(j.Input) {
		missing = append(missing, "input is not valid JSON")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidJob, strings.Join(missing, ", "))
	}
	return nil
}

func (j Job) encode() (string, error) {
	b, err := json.Marshal(j)
	return string(b), err
}

func (j Job) String() string { return j.RunID + "/" + j.NodeID }
