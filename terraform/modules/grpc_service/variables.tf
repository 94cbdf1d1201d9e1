variable "project_id" {
  type = string
}

variable "region" {
  type = string
}

variable "name" {
  description = "Cloud Run service name."
  type        = string
}

variable "description" {
  type = string
}

variable "image" {
  description = "The container image Cloud Build built from shared/grpc.Dockerfile."
  type        = string
}

variable "service_account_email" {
  description = "Identity of the service: the read function's service account (same grants)."
  type        = string
}

variable "port" {
  type    = number
  default = 50051
}

variable "workers" {
  description = "fs-grpc --workers: serving processes per instance (one per CPU)."
  type        = number
  default     = 2
}

variable "threads" {
  description = "fs-grpc --threads: calls served at once by each process."
  type        = number
  default     = 8
}

variable "min_instances" {
  type = number
}

variable "max_instances" {
  type = number
}

variable "concurrency" {
  type = number
}

variable "cpu" {
  type = string
}

variable "memory" {
  type = string
}

variable "timeout_s" {
  type = number
}

variable "ingress" {
  description = "INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  type        = string
}

variable "vpc_connector" {
  type = string
}

variable "environment" {
  type    = map(string)
  default = {}
}

variable "secret_environment" {
  description = "Environment variable => Secret Manager secret id (the service account must read it)."
  type        = map(string)
  default     = {}
}

variable "invokers" {
  type    = map(string)
  default = {}
}

variable "labels" {
  type    = map(string)
  default = {}
}
