variable "project_id" {
  description = "Project that owns the instance."
  type        = string
}

variable "region" {
  description = "Region of the instance (the functions' region)."
  type        = string
}

variable "name" {
  description = "Instance id."
  type        = string
  default     = "feature-store"
}

variable "tier" {
  description = "BASIC (one node) or STANDARD_HA (replicated, automatic failover)."
  type        = string
  default     = "STANDARD_HA"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.tier)
    error_message = "tier must be BASIC or STANDARD_HA."
  }
}

variable "memory_size_gb" {
  description = "Memory of the instance in GiB."
  type        = number
  default     = 5
}

variable "redis_version" {
  description = "Memorystore Redis version."
  type        = string
  default     = "REDIS_7_2"
}

variable "network_id" {
  description = "VPC the instance is reachable from."
  type        = string
}

variable "private_services_connection" {
  description = "Id of the private services peering; only used to order creation after it."
  type        = string
}
