# BigQuery: the offline store. Dataset feature_store and its tables, one JSON schema file per
# table in schemas/: mirrors of the source tables (merged by the ETL), their changelogs (one row
# per change, streamed by ingest_changes), daily feature snapshots, the ETL's bookkeeping, and the
# audit trail of reads (audit_reads, written by the audit-reads topic's BigQuery subscription).
#
# The code applies sql/bigquery/ too (CREATE TABLE IF NOT EXISTS, plus the changelog_*_dedup
# views, which only it declares), so on a dataset Terraform made it changes nothing. The two must
# agree column for column, with the same partitioning and clustering:
# tests/infra/test_terraform.py compares them. Change both together; a column Terraform would
# drop forces the table's replacement, which deletion_protection refuses.

locals {
  # Table => time partitioning column (DAY) and clustering columns; null = not partitioned.
  tables = {
    users                       = { partition = null, cluster = ["user_id"] }
    transactions                = { partition = "created_at", cluster = ["user_id", "merchant"] }
    risk_scores                 = { partition = null, cluster = ["user_id"] }
    installment_plans           = { partition = null, cluster = ["user_id"] }
    installments                = { partition = null, cluster = ["user_id"] }
    changelog_users             = { partition = "changed_at", cluster = ["user_id"] }
    changelog_transactions      = { partition = "changed_at", cluster = ["user_id"] }
    changelog_risk_scores       = { partition = "changed_at", cluster = ["user_id"] }
    changelog_installment_plans = { partition = "changed_at", cluster = ["user_id"] }
    changelog_installments      = { partition = "changed_at", cluster = ["user_id"] }
    feature_snapshots           = { partition = "snapshot_date", cluster = ["feature_set", "user_id"] }
    etl_watermarks              = { partition = null, cluster = [] }
    etl_runs                    = { partition = null, cluster = [] }
    audit_reads                 = { partition = "served_at", cluster = ["user_id", "client_id"] }
  }

  # Table => days a partition is kept (tables not listed keep theirs).
  partition_expiration_days = {
    audit_reads = var.audit_retention_days
  }
}

resource "google_bigquery_dataset" "this" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project                    = var.project_id
  dataset_id                 = var.dataset_id
  friendly_name              = "Feature store (offline)"
  description                = "Offline store of the BNPL feature store: mirrors, changelogs, snapshots, ETL state."
  location                   = var.location
  delete_contents_on_destroy = false
  labels                     = var.labels
}

resource "google_bigquery_table" "this" {
  #checkov:skip=CKV_GCP_80:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  for_each = local.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = each.key
  schema              = file("${path.module}/schemas/${each.key}.json")
  clustering          = length(each.value.cluster) > 0 ? each.value.cluster : null
  deletion_protection = var.deletion_protection
  labels              = var.labels

  dynamic "time_partitioning" {
    for_each = each.value.partition == null ? [] : [each.value.partition]
    content {
      type          = "DAY"
      field         = time_partitioning.value
      expiration_ms = contains(keys(local.partition_expiration_days), each.key) ? local.partition_expiration_days[each.key] * 86400000 : null
    }
  }
}
