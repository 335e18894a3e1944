package sqsadapter_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/flowcraft/sqsadapter"
)

// FuzzDecodeJob: any body decodes to a valid job or an ErrInvalidJob, and a
// valid job survives a round trip.
func FuzzDecodeJob(f *testing.F) {
	for _, s := range []string{
		`{"runId":"r","blueprintId":"b","nodeId":"n"}`,
		`{"runId":"r","blueprintId":"b","nodeId":"n","blueprintVersion":"1","input":{"a":[1,2.5,null,"x"]}}`,
		`{"runId":"r","blueprintId":"b","nodeId":"n","input":null,"extra":true}`,
		`{"runId":"","nodeId":1}`, `not json`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		job, err := sqsadapter.DecodeJob(body)
		var want sqsadapter.Job // what json.Unmarshal decodes
		if werr := json.Unmarshal(body, &want); werr != nil {
			if err == nil || !strings.HasSuffix(err.Error(), werr.Error()) {
				t.Fatalf("DecodeJob: %v; json.Unmarshal: %v", err, werr)
			}
		} else if err != nil || !reflect.DeepEqual(job, want) {
			t.Fatalf("DecodeJob: %+v, %v; json.Unmarshal: %+v", job, err, want)
		}
		if err != nil {
			if !errors.Is(err, sqsadapter.ErrInvalidJob) {
				t.Fatalf("error %v does not match ErrInvalidJob", err)
			}
			return
		}
		b, err := json.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		again, err := sqsadapter.DecodeJob(b)
		if err != nil {
			t.Fatalf("round trip of %s: %v", b, err)
		}
		if again.RunID != job.RunID || again.NodeID != job.NodeID || again.BlueprintID != job.BlueprintID || (job.Input == nil) != (again.Input == nil) {
			t.Fatalf("round trip changed %+v into %+v", job, again)
		}
	})
}
