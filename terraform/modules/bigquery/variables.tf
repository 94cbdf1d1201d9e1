variable "project_id" {
  description = "Project that owns the dataset (FS_BIGQUERY_PROJECT)."
  type        = string
}

variable "dataset_id" {
  description = "Dataset id (FS_BIGQUERY_DATASET)."
  type        = string
  default     = "feature_store"
}

variable "location" {
  description = "Dataset location (FS_BIGQUERY_LOCATION)."
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to destroy tables."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels on the dataset and tables."
  type        = map(string)
  default     = {}
}

variable "audit_retention_days" {
  description = "Days an audit_reads partition is kept."
  type        = number
  default     = 2557
}
