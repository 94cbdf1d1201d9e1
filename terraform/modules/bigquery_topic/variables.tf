variable "project_id" {
  description = "Project of the topic, its subscriptions and the dataset."
  type        = string
}

variable "name" {
  description = "Topic name; its subscriptions are named <name>-<key of subscriptions>."
  type        = string
}

variable "dataset" {
  description = "Dataset of the tables the subscriptions write."
  type        = string
}

variable "subscriptions" {
  description = "BigQuery subscriptions by name suffix: the table each writes and its filter (\"\": every message)."
  type = map(object({
    table  = string
    filter = string
  }))
}

variable "pubsub_agent" {
  description = "IAM member of the project's Pub/Sub service agent, which writes the rows."
  type        = string
}

variable "max_delivery_attempts" {
  description = "Deliveries of a message a table refuses before it goes to the dead-letter topic."
  type        = number
}

variable "labels" {
  description = "Labels of the topics and subscriptions."
  type        = map(string)
  default     = {}
}
