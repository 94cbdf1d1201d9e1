output "topic" {
  description = "Name of the topic."
  value       = google_pubsub_topic.this.name
}

output "subscriptions" {
  description = "Names of the BigQuery subscriptions, by key."
  value       = { for key, sub in google_pubsub_subscription.bigquery : key => sub.name }
}
