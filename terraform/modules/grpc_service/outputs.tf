output "uri" {
  description = "https:// URL of the service; gRPC clients dial its host on port 443."
  value       = google_cloud_run_v2_service.this.uri
}

output "name" {
  description = "The Cloud Run service name (alerts filter on it)."
  value       = google_cloud_run_v2_service.this.name
}
