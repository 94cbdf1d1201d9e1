variable "project_id" {
  description = "Project the metrics and alerts live in."
  type        = string
}

variable "services" {
  description = "Function name => Cloud Run service name serving it."
  type        = map(string)
}

variable "read_latency_p95_ms" {
  description = "Read function name => P95 latency target in milliseconds."
  type        = map(number)
}

variable "cache_hit_rate_min" {
  description = "Alert when fewer reads than this share come from Redis."
  type        = number
  default     = 0.85
}

variable "error_rate_max" {
  description = "Alert when more than this share of a function's responses are 5xx."
  type        = number
  default     = 0.01
}

variable "ingest_lag_field" {
  description = "Field of the ingest log line giving seconds from commit to Redis write."
  type        = string
  default     = "ingest_lag_s"
}

variable "refresh_age_field" {
  description = "Field of the refresh log line giving the age in seconds of the data it left in Redis."
  type        = string
  default     = "refresh_age_s"
}

variable "ingest_lag_max_s" {
  description = "Alert when P95 ingest lag exceeds this."
  type        = number
  default     = 300
}

variable "refresh_age_max_s" {
  description = "Alert when the refreshed data is older than this (2 hours: the freshness target)."
  type        = number
  default     = 7200
}

variable "notification_channels" {
  description = "Notification channel ids that receive every alert."
  type        = list(string)
  default     = []
}

variable "rate_limit_fail_open_max" {
  description = "Alert when more reads than this are served without a rate limit in 5 minutes."
  type        = number
  default     = 0
}
