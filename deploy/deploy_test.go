// Package deploy holds the deployment files (cloudformation.yaml,
// terraform/); its test parses them and checks that the worker policy
// allows every call the library makes (docs/aws.md, "Worker policy").
package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// needs is what the library and the example worker call, by the worker
// policy's statement: docs/aws.md's table of actions.
var needs = map[string][]string{
	"JobQueue":          {"sqs:ReceiveMessage", "sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"},
	"ContextTable":      {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"},
	"StatusTable":       {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
	"RunningRunsIndex":  {"dynamodb:Query"},
	"CoordinationTable": {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
}

// resourceOf is what each statement must name, in the template's words.
var resourceOf = map[string]string{
	"JobQueue":          "JobsQueue.Arn",
	"ContextTable":      "ContextTable.Arn",
	"StatusTable":       "StatusTable.Arn",
	"RunningRunsIndex":  "${StatusTable.Arn}/index/running-runs",
	"CoordinationTable": "CoordinationTable.Arn",
}

// template is a CloudFormation template as far as the test reads it.
type template struct {
	Resources map[string]struct {
		Type       string    `yaml:"Type"`
		Properties yaml.Node `yaml:"Properties"`
	} `yaml:"Resources"`
}

func TestCloudFormationTemplate(t *testing.T) {
	b, err := os.ReadFile("cloudformation.yaml")
	require.NoError(t, err)
	var tpl template
	require.NoError(t, yaml.Unmarshal(b, &tpl), "the template parses")

	types := map[string]string{}
	for name, r := range tpl.Resources {
		types[name] = r.Type
	}
	assert.Equal(t, map[string]string{
		"JobsDeadLetterQueue": "AWS::SQS::Queue", "DeadLetterAlarm": "AWS::CloudWatch::Alarm", "JobsQueue": "AWS::SQS::Queue",
		"ContextTable": "AWS::DynamoDB::Table", "StatusTable": "AWS::DynamoDB::Table", "CoordinationTable": "AWS::DynamoDB::Table",
		"WorkerPolicy": "AWS::IAM::ManagedPolicy",
	}, types)

	var policy struct {
		PolicyDocument struct {
			Statement []struct {
				Sid      string    `yaml:"Sid"`
				Effect   string    `yaml:"Effect"`
				Action   []string  `yaml:"Action"`
				Resource yaml.Node `yaml:"Resource"`
			} `yaml:"Statement"`
		} `yaml:"PolicyDocument"`
	}
	wp := tpl.Resources["WorkerPolicy"].Properties
	require.NoError(t, wp.Decode(&policy))
	seen := map[string]bool{}
	for _, st := range policy.PolicyDocument.Statement {
		want, ok := needs[st.Sid]
		if !assert.True(t, ok, "statement %q: not one the library needs", st.Sid) {
			continue
		}
		seen[st.Sid] = true
		assert.Equal(t, "Allow", st.Effect, st.Sid)
		assert.ElementsMatch(t, want, st.Action, "statement %s: the actions the library calls, and no more", st.Sid)
		assert.Equal(t, resourceOf[st.Sid], st.Resource.Value, "statement %s: its resource (%s)", st.Sid, st.Resource.Tag)
	}
	assert.Len(t, seen, len(needs), "every statement the library needs")

	// The alarm watches the dead-letter queue; the job queue redrives to it.
	alarm := tpl.Resources["DeadLetterAlarm"].Properties
	var a struct {
		MetricName string `yaml:"MetricName"`
		Dimensions []struct {
			Value yaml.Node `yaml:"Value"`
		} `yaml:"Dimensions"`
	}
	require.NoError(t, alarm.Decode(&a))
	assert.Equal(t, "ApproximateNumberOfMessagesVisible", a.MetricName)
	require.Len(t, a.Dimensions, 1)
	assert.Equal(t, "JobsDeadLetterQueue.QueueName", a.Dimensions[0].Value.Value)
	// TTL on the attribute ttl of every table: join records, and the items
	// of finished runs (Tuning.Retention, CreateTables).
	for _, name := range []string{"ContextTable", "StatusTable", "CoordinationTable"} {
		var table struct {
			TimeToLiveSpecification struct {
				AttributeName string `yaml:"AttributeName"`
				Enabled       bool   `yaml:"Enabled"`
			} `yaml:"TimeToLiveSpecification"`
		}
		props := tpl.Resources[name].Properties
		require.NoError(t, props.Decode(&table), name)
		assert.Equal(t, "ttl", table.TimeToLiveSpecification.AttributeName, "%s: TTL attribute", name)
		assert.True(t, table.TimeToLiveSpecification.Enabled, "%s: TTL enabled", name)
	}
	var q struct {
		RedrivePolicy struct {
			DeadLetterTargetArn yaml.Node `yaml:"deadLetterTargetArn"`
		} `yaml:"RedrivePolicy"`
	}
	jobs := tpl.Resources["JobsQueue"].Properties
	require.NoError(t, jobs.Decode(&q))
	assert.Equal(t, "JobsDeadLetterQueue.Arn", q.RedrivePolicy.DeadLetterTargetArn.Value)
}

// The Terraform module holds the same policy. terraform is not needed to
// read it: each statement is a Sid, an Action list and a Resource.
func TestTerraformPolicy(t *testing.T) {
	b, err := os.ReadFile("terraform/main.tf")
	require.NoError(t, err)
	stmt := regexp.MustCompile(`(?s)Sid\s*=\s*"(\w+)".*?Action\s*=\s*\[([^\]]*)\]\s*Resource\s*=\s*([^\n]+)`)
	found := map[string]bool{}
	for _, m := range stmt.FindAllStringSubmatch(string(b), -1) {
		sid := m[1]
		var actions []string
		for a := range strings.SplitSeq(m[2], ",") {
			if a = strings.Trim(strings.TrimSpace(a), `"`); a != "" {
				actions = append(actions, a)
			}
		}
		want, ok := needs[sid]
		if !assert.True(t, ok, "statement %q: not one the library needs", sid) {
			continue
		}
		found[sid] = true
		assert.ElementsMatch(t, want, actions, "statement %s", sid)
		if sid == "RunningRunsIndex" {
			assert.Contains(t, m[3], "/index/running-runs")
		}
	}
	assert.Len(t, found, len(needs), "every statement the library needs")
	for _, r := range []string{`resource "aws_cloudwatch_metric_alarm" "dead_letter"`, `name            = "running-runs"`} {
		assert.Contains(t, string(b), r, "main.tf")
	}
	// TTL on the attribute ttl of every table: join records, and the items
	// of finished runs (Tuning.Retention, CreateTables).
	table := regexp.MustCompile(`(?s)resource "aws_dynamodb_table" "(\w+)" \{(.*?)\n\}`)
	ttl := regexp.MustCompile(`ttl \{\s*attribute_name = "ttl"\s*enabled\s*= true\s*\}`)
	tables := map[string]bool{}
	for _, m := range table.FindAllStringSubmatch(string(b), -1) {
		tables[m[1]] = true
		assert.Regexp(t, ttl, m[2], "table %s: TTL on ttl", m[1])
	}
	assert.Equal(t, map[string]bool{"context": true, "status": true, "coordination": true}, tables)
}

// The Lambda example's template uses partial batch responses, which its
// handler gives.
func TestLambdaTemplate(t *testing.T) {
	b, err := os.ReadFile("../examples/lambda/template.yaml")
	require.NoError(t, err)
	var tpl template
	require.NoError(t, yaml.Unmarshal(b, &tpl))
	var fn struct {
		Timeout int `yaml:"Timeout"`
		Events  map[string]struct {
			Type       string `yaml:"Type"`
			Properties struct {
				FunctionResponseTypes []string `yaml:"FunctionResponseTypes"`
			} `yaml:"Properties"`
		} `yaml:"Events"`
	}
	props := tpl.Resources["Worker"].Properties
	require.NoError(t, props.Decode(&fn))
	require.Contains(t, fn.Events, "JobQueue")
	assert.Equal(t, "SQS", fn.Events["JobQueue"].Type)
	assert.Equal(t, []string{"ReportBatchItemFailures"}, fn.Events["JobQueue"].Properties.FunctionResponseTypes)
	var q struct {
		VisibilityTimeout int `yaml:"VisibilityTimeout"`
	}
	jobs := tpl.Resources["Jobs"].Properties
	require.NoError(t, jobs.Decode(&q))
	assert.GreaterOrEqual(t, q.VisibilityTimeout, 6*fn.Timeout, "AWS asks for a visibility timeout of six times the function's timeout")
}
