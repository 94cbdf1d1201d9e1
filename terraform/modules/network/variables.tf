variable "project_id" {
  description = "Project that owns the network."
  type        = string
}

variable "region" {
  description = "Region of the connector subnet."
  type        = string
}

variable "name" {
  description = "Name of the VPC; other names are derived from it."
  type        = string
  default     = "feature-store"
}

variable "connector_name" {
  description = "Serverless VPC Access connector name (at most 25 characters)."
  type        = string
  default     = "fs-connector"
}

variable "connector_cidr" {
  description = "A /28 for the connector subnet."
  type        = string
  default     = "10.8.0.0/28"
}

variable "connector_machine_type" {
  description = "Connector instance type: e2-micro suits a few hundred Mbps; raise it for heavier read traffic."
  type        = string
  default     = "e2-standard-4"
}

variable "connector_min_instances" {
  description = "Connector instances kept up (at least 2)."
  type        = number
  default     = 2
}

variable "connector_max_instances" {
  description = "Connector instances at most (at most 10)."
  type        = number
  default     = 10
}

variable "private_services_prefix_length" {
  description = "Size of the range peered with Google for Memorystore and Cloud SQL."
  type        = number
  default     = 20
}
