output "dataset_id" {
  description = "Dataset id."
  value       = google_bigquery_dataset.this.dataset_id
}

output "tables" {
  description = "Table ids."
  value       = sort(keys(google_bigquery_table.this))
}

output "audit_table" {
  description = "Table id of the audit trail of reads."
  value       = google_bigquery_table.this["audit_reads"].table_id
}
