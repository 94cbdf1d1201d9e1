variable "project_id" {
  description = "Project that owns the jobs."
  type        = string
}

variable "region" {
  description = "Region of the jobs."
  type        = string
}

variable "etl_workflow_id" {
  description = "Full id of the ETL workflow (projects/P/locations/R/workflows/NAME)."
  type        = string
}

variable "etl_schedule" {
  description = "Cron schedule of the daily ETL, in UTC."
  type        = string
  default     = "30 2 * * *"
}

variable "etl_argument" {
  description = "Argument of each ETL execution."
  type        = any
  default     = {}
}

variable "refresh_url" {
  description = "HTTPS URL of the refresh_cache function."
  type        = string
}

variable "refresh_schedule" {
  description = "Cron schedule of the incremental refresh."
  type        = string
  default     = "*/5 * * * *"
}

variable "refresh_body" {
  description = "JSON body posted to refresh_cache."
  type        = any
  default     = { mode = "incremental" }
}

variable "refresh_deadline_s" {
  description = "How long Scheduler waits for one refresh (15-1800 s)."
  type        = number
  default     = 280
}
