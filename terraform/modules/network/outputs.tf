output "network_id" {
  description = "Self link id of the VPC (authorized network of Redis, private network of Cloud SQL)."
  value       = google_compute_network.this.id
}

output "connector_id" {
  description = "Serverless VPC Access connector the functions use."
  value       = google_vpc_access_connector.this.id
}

output "private_services_connection" {
  description = "The peering; stores depend on it so they are created after it."
  value       = google_service_networking_connection.private_services.id
}
