output "ids" {
  description = "Secret id => secret_id (for secret_environment_variables and IAM)."
  value       = { for id, secret in google_secret_manager_secret.this : id => secret.secret_id }
}
