variable "project_id" {
  description = "Project that owns the topics."
  type        = string
}

variable "topic" {
  description = "Topic of change events (FS_PUBSUB_TOPIC)."
  type        = string
  default     = "cdc-changes"
}

variable "push_endpoint" {
  description = "HTTPS URL of the ingest function."
  type        = string
}

variable "replicate_endpoint" {
  description = "HTTPS URL of the migration's replicate_changes function; empty: no second subscription."
  type        = string
  default     = ""
}

variable "replicate_ack_deadline_seconds" {
  description = "How long Pub/Sub waits for replicate_changes; at least its timeout."
  type        = number
  default     = 60
}

variable "ack_deadline_seconds" {
  description = "How long Pub/Sub waits for the function; at least its timeout."
  type        = number
  default     = 60
}

variable "max_delivery_attempts" {
  description = "Deliveries before a message goes to the dead-letter topic (5-100)."
  type        = number
  default     = 10
}

variable "publishers" {
  description = "Name => IAM member allowed to publish change events."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on topics and subscriptions."
  type        = map(string)
  default     = {}
}

variable "audit_topic" {
  description = "Topic of the reads' audit rows (FS_AUDIT_TOPIC)."
  type        = string
  default     = "audit-reads"
}

variable "dataset" {
  description = "Dataset of the tables the BigQuery subscriptions write: audit_reads and the changelog_<table>s."
  type        = string
}

variable "audit_table" {
  description = "Table id the audit topic's BigQuery subscription writes (audit_reads)."
  type        = string
}

variable "changelog_topic" {
  description = "Topic of the CDC changelog rows (FS_CDC_CHANGELOG_TOPIC): one message per change, attribute table = its source table."
  type        = string
  default     = "cdc-changelog"
}

variable "changelog_tables" {
  description = "Source tables whose changelog_<table> a BigQuery subscription of the changelog topic writes."
  type        = list(string)
  default     = ["users", "transactions", "risk_scores", "installment_plans", "installments"]
}
