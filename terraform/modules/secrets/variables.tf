variable "project_id" {
  description = "Project that owns the secrets."
  type        = string
}

variable "region" {
  description = "The one region the secrets are replicated to."
  type        = string
}

variable "secrets" {
  description = "Secret id => what it holds."
  type        = map(string)
}

variable "managed_versions" {
  description = "Ids of the secrets whose value Terraform writes (from var.values)."
  type        = list(string)
  default     = []
}

variable "values" {
  description = "Secret id => value, for the ids in managed_versions."
  type        = map(string)
  default     = {}
  sensitive   = true
}

variable "labels" {
  description = "Labels on every secret."
  type        = map(string)
  default     = {}
}
