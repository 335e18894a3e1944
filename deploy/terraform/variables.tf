variable "prefix" {
  description = "Prefix of the queue and table names."
  type        = string
  default     = "flowcraft"
}

variable "visibility_timeout_seconds" {
  description = "The job queue's visibility timeout: the workers' WithVisibilityTimeout (-visibility-timeout)."
  type        = number
  default     = 30
}

variable "max_receive_count" {
  description = "Receives of a job before it moves to the dead-letter queue."
  type        = number
  default     = 20
}

variable "alarm_topic_arn" {
  description = "SNS topic told when a job reaches the dead-letter queue (empty: the alarm only)."
  type        = string
  default     = ""
}
