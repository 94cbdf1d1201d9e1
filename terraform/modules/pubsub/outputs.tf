output "topic" {
  description = "Name of the change topic."
  value       = google_pubsub_topic.changes.name
}

output "dead_letter_topic" {
  description = "Name of the dead-letter topic."
  value       = google_pubsub_topic.dead_letter.name
}

output "push_member" {
  description = "IAM member of the push identity (to be granted run.invoker on the ingest function)."
  value       = "serviceAccount:${google_service_account.push.email}"
}

output "replicate_subscription" {
  description = "Name of the migration's subscription (null when no replicate_changes is deployed)."
  value       = length(google_pubsub_subscription.replicate) > 0 ? google_pubsub_subscription.replicate[0].name : null
}

output "audit_topic" {
  description = "Name of the audit topic."
  value       = module.audit.topic
}

output "changelog_topic" {
  description = "Name of the CDC changelog topic."
  value       = module.changelog.topic
}
