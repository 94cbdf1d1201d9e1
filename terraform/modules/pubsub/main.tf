# Change events: topic cdc-changes, delivered to the ingest function by a push subscription
# with a retry policy and a dead-letter topic, and to the migration's replicate_changes by a second one.
#
# Why a push subscription of our own and not the function's event_trigger: an event_trigger
# makes Eventarc create the subscription, and Terraform cannot set a dead-letter policy on it
# (hashicorp/terraform-provider-google issues 17697 and 25069; the only route is a
# `gcloud pubsub subscriptions update` after every deploy, outside state). Declaring both
# would deliver every message twice. So the ingest function is deployed with an HTTP trigger
# and this subscription pushes to it with an OIDC token. Its code stays a CloudEvent function:
# the @functions_framework.cloud_event decorator fixes the signature type, and the framework
# accepts Pub/Sub's raw push body as a messagePublished event. Retrying is the same as
# RETRY_POLICY_RETRY: raising gives a 500 and Pub/Sub redelivers with backoff; after
# max_delivery_attempts the message goes to the dead-letter topic (house style: a poison
# message is logged and acknowledged by returning, so it never loops).

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "changes" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project                    = var.project_id
  name                       = var.topic
  labels                     = var.labels
  message_retention_duration = "86400s"
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project = var.project_id
  name    = "${var.topic}-dead-letter"
  labels  = var.labels
}

# A topic keeps nothing by itself: this pull subscription holds dead letters for inspection
# and replay (gcloud pubsub subscriptions pull / seek).
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.topic}-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  labels                     = var.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

# Identity Pub/Sub signs its push requests as; it may invoke only the functions the subscriptions push to
# (ingest_changes, and replicate_changes during a migration).
resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "pubsub-push-ingest"
  display_name = "Pub/Sub push to the ingest function"
}

# Pub/Sub mints the OIDC tokens of the push identity.
resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_pubsub_subscription" "ingest" {
  project                    = var.project_id
  name                       = "${var.topic}-ingest"
  topic                      = google_pubsub_topic.changes.id
  labels                     = var.labels
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "604800s"
  # Ordering is not needed: the online store writes compare-and-set on the source watermark,
  # so a redelivered or reordered change never replaces newer data.
  enable_message_ordering = false

  push_config {
    push_endpoint = var.push_endpoint

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = var.push_endpoint
    }
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
}

# The migration's replication (docs/migration.md): a second push subscription on the same topic, so
# every change also reaches replicate_changes, with its own backlog, retries and dead letters. Ordering
# is not needed either: the replication writes newest-position-wins per row.
resource "google_pubsub_subscription" "replicate" {
  count = var.replicate_endpoint == "" ? 0 : 1

  project                    = var.project_id
  name                       = "${var.topic}-replicate"
  topic                      = google_pubsub_topic.changes.id
  labels                     = var.labels
  ack_deadline_seconds       = var.replicate_ack_deadline_seconds
  message_retention_duration = "604800s"
  enable_message_ordering    = false

  push_config {
    push_endpoint = var.replicate_endpoint

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = var.replicate_endpoint
    }
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
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber_replicate" {
  count = var.replicate_endpoint == "" ? 0 : 1

  project      = var.project_id
  subscription = google_pubsub_subscription.replicate[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Dead-lettering acts as the Pub/Sub service agent: it publishes to the dead-letter topic and
# acknowledges on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.ingest.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The CDC relay (outside this stack) publishes the changes.
resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = var.publishers

  project = var.project_id
  topic   = google_pubsub_topic.changes.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

# ---- the audit trail of reads (docs/security.md) ----------------------------------------------
# The read functions publish one message per (read, user), its data one audit_reads row as JSON; this
# BigQuery subscription writes each message as a row with the table's own schema (use_table_schema), so
# no code of ours runs between the topic and the table. A message the table refuses (a schema drift)
# goes to the dead-letter topic after max_delivery_attempts and is held there for inspection and replay.

resource "google_pubsub_topic" "audit" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project = var.project_id
  name    = var.audit_topic
  labels  = var.labels
  # Kept a week, so a subscription paused by an outage of BigQuery or a permission error loses nothing.
  message_retention_duration = "604800s"
}

resource "google_pubsub_topic" "audit_dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest. Customer-managed keys would add a KMS key ring whose loss or disabling makes the data unreadable, and the project has no key custodian yet; adopting CMEK is a separate decision for the whole stack.
  project = var.project_id
  name    = "${var.audit_topic}-dead-letter"
  labels  = var.labels
}

resource "google_pubsub_subscription" "audit_dead_letter" {
  project                    = var.project_id
  name                       = "${var.audit_topic}-dead-letter-hold"
  topic                      = google_pubsub_topic.audit_dead_letter.id
  labels                     = var.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent writes the rows (no service_account_email): it needs to read the table's
# schema and insert into it. Granted on the table alone, not the dataset.
resource "google_bigquery_table_iam_member" "audit_writer" {
  project    = var.project_id
  dataset_id = var.audit_dataset
  table_id   = var.audit_table
  role       = "roles/bigquery.dataEditor"
  member     = local.pubsub_agent
}

resource "google_pubsub_subscription" "audit_bigquery" {
  project                    = var.project_id
  name                       = "${var.audit_topic}-bigquery"
  topic                      = google_pubsub_topic.audit.id
  labels                     = var.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  bigquery_config {
    table               = "${var.project_id}.${var.audit_dataset}.${var.audit_table}"
    use_table_schema    = true
    write_metadata      = false
    drop_unknown_fields = false
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.audit_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_bigquery_table_iam_member.audit_writer]
}

resource "google_pubsub_topic_iam_member" "audit_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.audit_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "audit_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.audit_bigquery.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
