output "service_account_member" {
  description = "IAM member of the scheduler's identity (granted run.invoker on refresh_cache)."
  value       = "serviceAccount:${google_service_account.this.email}"
}
