variable "project_id" {
  description = "Project that owns the function."
  type        = string
}

variable "region" {
  description = "Region of the function."
  type        = string
}

variable "name" {
  description = "Function name = folder under functions/ = entry point."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.name))
    error_message = "name must be a snake_case function name (the folder and the entry point)."
  }
}

variable "description" {
  description = "What the function is for."
  type        = string
}

variable "source_bucket" {
  description = "Bucket holding the packaged source zips."
  type        = string
}

variable "source_object" {
  description = "Object name of this function's zip."
  type        = string
}

variable "build_service_account" {
  description = "Service account id (projects/.../serviceAccounts/...) Cloud Build uses to build the function."
  type        = string
}

variable "min_instances" {
  description = "Instances kept warm (the read path keeps some to avoid cold starts)."
  type        = number
}

variable "max_instances" {
  description = "Upper bound on instances (and so on Postgres connections: max x FS_POSTGRES_POOL_SIZE)."
  type        = number
}

variable "concurrency" {
  description = "Requests one instance serves at once (needs at least 1 CPU when above 1)."
  type        = number
}

variable "cpu" {
  description = "vCPUs per instance, as a string (\"1\", \"2\")."
  type        = string
}

variable "memory" {
  description = "Memory per instance (\"512Mi\", \"1Gi\")."
  type        = string
}

variable "timeout_s" {
  description = "Request timeout in seconds."
  type        = number
}

variable "ingress" {
  description = "ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  type        = string

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress)
    error_message = "ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector id."
  type        = string
}

variable "environment" {
  description = "Plain environment variables: only names from feature_store.settings.known_env_vars()."
  type        = map(string)
  default     = {}
}

variable "secret_environment" {
  description = "Environment variable => Secret Manager secret id; the function may read exactly these secrets."
  type        = map(string)
  default     = {}
}

variable "project_roles" {
  description = "Project-level roles of the function's service account."
  type        = set(string)
  default     = []
}

variable "dataset_roles" {
  description = "BigQuery dataset id => role of the function's service account on that dataset."
  type        = map(string)
  default     = {}
}

variable "invokers" {
  description = "Caller name => IAM member allowed to invoke the function."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on the function."
  type        = map(string)
  default     = {}
}
