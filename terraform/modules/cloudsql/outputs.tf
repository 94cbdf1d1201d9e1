output "connection_name" {
  description = "project:region:instance, FS_POSTGRES_INSTANCE_CONNECTION_NAME."
  value       = google_sql_database_instance.this.connection_name
}

output "private_ip" {
  description = "Private IP address of the instance."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database" {
  description = "Database name."
  value       = google_sql_database.this.name
}

output "user" {
  description = "Login of the functions."
  value       = google_sql_user.app.name
}

output "password" {
  description = "Password of that login (goes into Secret Manager)."
  value       = random_password.app.result
  sensitive   = true
}
