output "host" {
  description = "Private IP of the primary endpoint."
  value       = google_redis_instance.this.host
}

output "port" {
  description = "TLS port (6378 with in-transit encryption)."
  value       = google_redis_instance.this.port
}

output "url" {
  description = "FS_REDIS_URL: rediss:// with the AUTH string and the pinned CA."
  value       = local.url
  sensitive   = true
}
