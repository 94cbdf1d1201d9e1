# A topic whose messages BigQuery subscriptions write as table rows, with no code of ours between the
# topic and the tables: each subscription writes each message it takes (all of them, or those its
# filter keeps) as one row with the table's own schema (use_table_schema: the message's data is the row
# as JSON). A message a table refuses (a schema drift) goes to the dead-letter topic after
# max_delivery_attempts and is held there for inspection and replay. Used by modules/pubsub for the
# audit trail of reads (audit_reads) and the CDC changelog (changelog_<table>, one per table).

resource "google_pubsub_topic" "this" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project = var.project_id
  name    = var.name
  labels  = var.labels
  # Kept a week, so a subscription paused by an outage of BigQuery or a permission error loses nothing.
  message_retention_duration = "604800s"
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project = var.project_id
  name    = "${var.name}-dead-letter"
  labels  = var.labels
}

resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = var.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent writes the rows (no service_account_email): it needs to read each table's
# schema and insert into it. Granted on the tables alone, not the dataset.
resource "google_bigquery_table_iam_member" "writer" {
  for_each = var.subscriptions

  project    = var.project_id
  dataset_id = var.dataset
  table_id   = each.value.table
  role       = "roles/bigquery.dataEditor"
  member     = var.pubsub_agent
}

resource "google_pubsub_subscription" "bigquery" {
  for_each = var.subscriptions

  project                    = var.project_id
  name                       = "${var.name}-${each.key}"
  topic                      = google_pubsub_topic.this.id
  labels                     = var.labels
  filter                     = each.value.filter
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  bigquery_config {
    table               = "${var.project_id}.${var.dataset}.${each.value.table}"
    use_table_schema    = true
    write_metadata      = false
    drop_unknown_fields = false
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_bigquery_table_iam_member.writer]
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = var.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each = google_pubsub_subscription.bigquery

  project      = var.project_id
  subscription = each.value.name
  role         = "roles/pubsub.subscriber"
  member       = var.pubsub_agent
}
