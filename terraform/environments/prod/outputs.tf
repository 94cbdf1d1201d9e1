output "function_urls" {
  description = "Function name => HTTPS endpoint."
  value       = { for name, fn in module.function : name => fn.uri }
}

output "function_service_accounts" {
  description = "Function name => its own service account."
  value       = { for name, fn in module.function : name => fn.service_account_email }
}

output "function_source_bucket" {
  description = "Bucket Cloud Build uploads functions/<name>/<version>.zip to."
  value       = google_storage_bucket.function_sources.name
}

output "redis_host" {
  description = "Private IP of Memorystore."
  value       = module.redis.host
}

output "cloudsql_connection_name" {
  description = "Connection name of the Cloud SQL instance (null when none is deployed)."
  value       = local.cloudsql_deployed ? module.cloudsql[0].connection_name : null
}

output "workflows" {
  description = "Workflow name => id."
  value       = module.workflows.ids
}

output "bigquery_tables" {
  description = "Tables of the offline store."
  value       = module.bigquery.tables
}
