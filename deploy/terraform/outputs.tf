output "queue_url" {
  value = aws_sqs_queue.jobs.url
}

output "queue_arn" {
  value = aws_sqs_queue.jobs.arn
}

output "dead_letter_queue_url" {
  value = aws_sqs_queue.dead_letter.url
}

output "context_table_name" {
  value = aws_dynamodb_table.context.name
}

output "status_table_name" {
  value = aws_dynamodb_table.status.name
}

output "coordination_table_name" {
  value = aws_dynamodb_table.coordination.name
}

output "running_runs_index_arn" {
  value = "${aws_dynamodb_table.status.arn}/index/running-runs"
}

output "worker_policy_arn" {
  value = aws_iam_policy.worker.arn
}
