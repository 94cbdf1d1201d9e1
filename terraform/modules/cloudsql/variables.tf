variable "project_id" {
  description = "Project that owns the instance."
  type        = string
}

variable "region" {
  description = "Region of the instance (the functions' region)."
  type        = string
}

variable "name" {
  description = "Instance name."
  type        = string
  default     = "feature-store-pg15"
}

variable "tier" {
  description = "Machine tier."
  type        = string
  default     = "db-custom-4-16384"
}

variable "availability_type" {
  description = "REGIONAL (standby in a second zone) or ZONAL."
  type        = string
  default     = "REGIONAL"
}

variable "disk_size_gb" {
  description = "Initial disk size; it grows automatically."
  type        = number
  default     = 50
}

variable "max_connections" {
  description = "PostgreSQL max_connections; the functions' pools must fit in it."
  type        = number
  default     = 500
}

variable "database" {
  description = "Database name (FS_POSTGRES_DATABASE)."
  type        = string
  default     = "feature_store"
}

variable "user" {
  description = "Login the functions use (FS_POSTGRES_USER)."
  type        = string
  default     = "feature_store"
}

variable "deletion_protection" {
  description = "Refuse to destroy the instance."
  type        = bool
  default     = true
}

variable "network_id" {
  description = "VPC the private IP is allocated in."
  type        = string
}

variable "private_services_connection" {
  description = "Id of the private services peering; only used to order creation after it."
  type        = string
}
