output "dataset_id" {
  description = "Dataset id."
  value       = google_bigquery_dataset.this.dataset_id
}

output "tables" {
  description = "Table ids."
  value       = sort(keys(google_bigquery_table.this))
}
