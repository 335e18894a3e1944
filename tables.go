package sqsadapter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
)

// TableNames names the three DynamoDB tables of the adapter.
type TableNames struct {
	Context      string // run contexts and node records (DynamoDbContext)
	Status       string // run records (DynamoDbContext)
	Coordination string // joins, locks, markers (DynamoDbCoordinationStore)
}

// CreateTables creates the three tables with on-demand (PAY_PER_REQUEST)
// billing, in the layout DynamoDbContext and DynamoDbCoordinationStore use:
//
//   - Context: partition key runId (S), sort key key (S).
//   - Status: partition key runId (S), and the sparse global secondary index
//     runningRunsIndex: partition key gsiRunning (S, one of 16 shard values
//     "running#<s>"), sort key runningSince (N), all attributes projected.
//   - Coordination: partition key coordinationKey (S).
//
// DynamoDB TTL is enabled on the attribute ttl of all three tables: join
// records expire after Tuning.CoordinationTTL, and the items of a finished
// run after Tuning.Retention, when it is set (see ContextStore.ExpireRun).
//
// It is idempotent: a table that exists already is kept, after checking that
// its keys (and the status table's index) are the ones above. It blocks until
// every table and index is ACTIVE and TTL is enabled, or ctx is done (without
// a ctx deadline it waits at most 10 minutes). It is safe for concurrent use,
// also from several processes.
func CreateTables(ctx context.Context, client DynamoDBClient, names TableNames) error {
	if names.Context == "" || names.Status == "" || names.Coordination == "" {
		return fmt.Errorf("sqsadapter: create tables: every table name is required (got %+v)", names)
	}
	specs := []*dynamodb.CreateTableInput{
		{
			TableName:   aws.String(names.Context),
			BillingMode: types.BillingModePayPerRequest,
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(attrRunID), AttributeType: types.ScalarAttributeTypeS},
				{AttributeName: aws.String(attrKey), AttributeType: types.ScalarAttributeTypeS},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(attrRunID), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(attrKey), KeyType: types.KeyTypeRange},
			},
		},
		{
			TableName:   aws.String(names.Status),
			BillingMode: types.BillingModePayPerRequest,
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(attrRunID), AttributeType: types.ScalarAttributeTypeS},
				{AttributeName: aws.String(attrGSIRunning), AttributeType: types.ScalarAttributeTypeS},
				{AttributeName: aws.String(attrRunningSince), AttributeType: types.ScalarAttributeTypeN},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(attrRunID), KeyType: types.KeyTypeHash},
			},
			GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
				IndexName: aws.String(runningRunsIndex),
				KeySchema: []types.KeySchemaElement{
					{AttributeName: aws.String(attrGSIRunning), KeyType: types.KeyTypeHash},
					{AttributeName: aws.String(attrRunningSince), KeyType: types.KeyTypeRange},
				},
				Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
			}},
		},
		{
			TableName:   aws.String(names.Coordination),
			BillingMode: types.BillingModePayPerRequest,
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(attrCoordinationKey), AttributeType: types.ScalarAttributeTypeS},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(attrCoordinationKey), KeyType: types.KeyTypeHash},
			},
		},
	}

	for _, spec := range specs {
		_, err := client.CreateTable(ctx, spec)
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("sqsadapter: create table %s: %w", aws.ToString(spec.TableName), err)
		}
	}

	maxWait := 10 * time.Minute
	if deadline, ok := ctx.Deadline(); ok {
		maxWait = time.Until(deadline)
	}
	waiter := dynamodb.NewTableExistsWaiter(client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 500 * time.Millisecond
		o.MaxDelay = 10 * time.Second
	})
	for _, spec := range specs {
		name := aws.ToString(spec.TableName)
		desc, err := waitTableActive(ctx, waiter, client, name, maxWait)
		if err != nil {
			return fmt.Errorf("sqsadapter: wait for table %s: %w", name, err)
		}
		if err := checkTableLayout(desc, spec); err != nil {
			return fmt.Errorf("sqsadapter: table %s: %w", name, err)
		}
	}

	for _, name := range []string{names.Context, names.Status, names.Coordination} {
		if err := enableTTL(ctx, client, name); err != nil {
			return fmt.Errorf("sqsadapter: enable TTL on table %s: %w", name, err)
		}
	}
	return nil
}

// waitTableActive waits until the table and its global secondary indexes
// are ACTIVE and returns its description.
func waitTableActive(ctx context.Context, waiter *dynamodb.TableExistsWaiter, client DynamoDBClient, name string, maxWait time.Duration) (*types.TableDescription, error) {
	if maxWait <= 0 {
		return nil, context.DeadlineExceeded
	}
	in := &dynamodb.DescribeTableInput{TableName: aws.String(name)}
	out, err := waiter.WaitForOutput(ctx, in, maxWait)
	if err != nil {
		return nil, err
	}
	// An index added to an existing table may still be building.
	delay := 500 * time.Millisecond
	for {
		pending := false
		for _, gsi := range out.Table.GlobalSecondaryIndexes {
			if gsi.IndexStatus != "" && gsi.IndexStatus != types.IndexStatusActive {
				pending = true
			}
		}
		if !pending {
			return out.Table, nil
		}
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(2*delay, 10*time.Second)
		if out, err = client.DescribeTable(ctx, in); err != nil {
			return nil, err
		}
	}
}

// checkTableLayout checks that an existing table has the keys (and indexes)
// that spec creates.
func checkTableLayout(desc *types.TableDescription, spec *dynamodb.CreateTableInput) error {
	if got, want := keySchemaString(desc.KeySchema), keySchemaString(spec.KeySchema); got != want {
		return fmt.Errorf("exists with key schema %s, not %s", got, want)
	}
	for _, wantIdx := range spec.GlobalSecondaryIndexes {
		found := false
		for _, idx := range desc.GlobalSecondaryIndexes {
			if aws.ToString(idx.IndexName) != aws.ToString(wantIdx.IndexName) {
				continue
			}
			found = true
			if got, want := keySchemaString(idx.KeySchema), keySchemaString(wantIdx.KeySchema); got != want {
				return fmt.Errorf("index %s has key schema %s, not %s", aws.ToString(idx.IndexName), got, want)
			}
		}
		if !found {
			return fmt.Errorf("exists without the global secondary index %s (%s)",
				aws.ToString(wantIdx.IndexName), keySchemaString(wantIdx.KeySchema))
		}
	}
	return nil
}

func keySchemaString(ks []types.KeySchemaElement) string {
	parts := make([]string, 0, len(ks))
	for _, k := range ks {
		parts = append(parts, aws.ToString(k.AttributeName)+" "+string(k.KeyType))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// enableTTL enables DynamoDB TTL on the attribute ttl of table, unless it is
// enabled already.
func enableTTL(ctx context.Context, client DynamoDBClient, table string) error {
	desc, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	if err != nil {
		return err
	}
	if d := desc.TimeToLiveDescription; d != nil {
		switch d.TimeToLiveStatus {
		case types.TimeToLiveStatusEnabled, types.TimeToLiveStatusEnabling:
			if name := aws.ToString(d.AttributeName); name != attrTTL {
				return fmt.Errorf("TTL is enabled on attribute %q, not %q", name, attrTTL)
			}
			return nil
		case types.TimeToLiveStatusDisabling:
			return errors.New("TTL is being disabled; try again once it is disabled")
		}
	}
	_, err = client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(attrTTL),
			Enabled:       aws.Bool(true),
		},
	})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "ValidationException" &&
		strings.Contains(ae.ErrorMessage(), "already enabled") {
		// Enabled by a concurrent caller between the two calls.
		return nil
	}
	return err
}
