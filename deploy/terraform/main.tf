# The job queue, its dead-letter queue and an alarm on it, the three tables
# and the worker policy of sqsadapter, as deploy/cloudformation.yaml has
# them (docs/aws.md). CreateTables accepts these tables as they are.

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.prefix}-jobs-dlq"
  message_retention_seconds = 1209600 # 14 days: longer than the job queue's
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "jobs" {
  name                       = "${var.prefix}-jobs" # a standard queue: FIFO queues do not work
  visibility_timeout_seconds = var.visibility_timeout_seconds
  receive_wait_time_seconds  = 20
  message_retention_seconds  = 345600 # 4 days
  delay_seconds              = 0
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_cloudwatch_metric_alarm" "dead_letter" {
  alarm_name          = "${var.prefix}-jobs-dlq-not-empty"
  alarm_description   = "a job reached the dead-letter queue (see docs/aws.md, \"Queue\")"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_topic_arn == "" ? [] : [var.alarm_topic_arn]
}

resource "aws_dynamodb_table" "context" {
  name         = "${var.prefix}-context"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "runId"
  range_key    = "key"
  attribute {
    name = "runId"
    type = "S"
  }
  attribute {
    name = "key"
    type = "S"
  }
  # Tuning.Retention: the items of finished runs expire.
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
}

resource "aws_dynamodb_table" "status" {
  name         = "${var.prefix}-status"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "runId"
  attribute {
    name = "runId"
    type = "S"
  }
  attribute {
    name = "gsiRunning"
    type = "S"
  }
  attribute {
    name = "runningSince"
    type = "N"
  }
  global_secondary_index {
    name            = "running-runs"
    hash_key        = "gsiRunning"
    range_key       = "runningSince"
    projection_type = "ALL"
  }
  # Tuning.Retention: the records of finished runs expire.
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
}

resource "aws_dynamodb_table" "coordination" {
  name         = "${var.prefix}-coordination"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "coordinationKey"
  attribute {
    name = "coordinationKey"
    type = "S"
  }
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }
}

resource "aws_iam_policy" "worker" {
  name        = "${var.prefix}-worker"
  description = "sqsadapter workers and clients"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "JobQueue"
        Effect   = "Allow"
        Action   = ["sqs:ReceiveMessage", "sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl"]
        Resource = aws_sqs_queue.jobs.arn
      },
      {
        Sid      = "ContextTable"
        Effect   = "Allow"
        Action   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
        Resource = aws_dynamodb_table.context.arn
      },
      {
        Sid      = "StatusTable"
        Effect   = "Allow"
        Action   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
        Resource = aws_dynamodb_table.status.arn
      },
      {
        Sid      = "RunningRunsIndex" # ListRuns and the reconciler (-reconcile-every)
        Effect   = "Allow"
        Action   = ["dynamodb:Query"]
        Resource = "${aws_dynamodb_table.status.arn}/index/running-runs"
      },
      {
        Sid      = "CoordinationTable"
        Effect   = "Allow"
        Action   = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
        Resource = aws_dynamodb_table.coordination.arn
      },
    ]
  })
}
