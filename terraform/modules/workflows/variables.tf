variable "project_id" {
  description = "Project that owns the workflows."
  type        = string
}

variable "region" {
  description = "Region of the workflows."
  type        = string
}

variable "workflows" {
  description = "Workflow name => YAML source."
  type        = map(string)
}

variable "env" {
  description = "Variables every workflow reads with sys.get_env()."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels on every workflow."
  type        = map(string)
  default     = {}
}
