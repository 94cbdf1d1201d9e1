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
# The read functions publish one message per (read, user), its data one audit_reads row as JSON; one
# BigQuery subscription writes each as a row of audit_reads (modules/bigquery_topic).

module "audit" {
  source = "../bigquery_topic"

  project_id            = var.project_id
  name                  = var.audit_topic
  dataset               = var.dataset
  subscriptions         = { bigquery = { table = var.audit_table, filter = "" } }
  pubsub_agent          = local.pubsub_agent
  max_delivery_attempts = var.max_delivery_attempts
  labels                = var.labels
}

# Resources of this module before modules/bigquery_topic held them: moved, not replaced.
moved {
  from = google_pubsub_topic.audit
  to   = module.audit.google_pubsub_topic.this
}

moved {
  from = google_pubsub_topic.audit_dead_letter
  to   = module.audit.google_pubsub_topic.dead_letter
}

moved {
  from = google_pubsub_subscription.audit_dead_letter
  to   = module.audit.google_pubsub_subscription.dead_letter
}

moved {
  from = google_bigquery_table_iam_member.audit_writer
  to   = module.audit.google_bigquery_table_iam_member.writer["bigquery"]
}

moved {
  from = google_pubsub_subscription.audit_bigquery
  to   = module.audit.google_pubsub_subscription.bigquery["bigquery"]
}

moved {
  from = google_pubsub_topic_iam_member.audit_dead_letter_publisher
  to   = module.audit.google_pubsub_topic_iam_member.dead_letter_publisher
}

moved {
  from = google_pubsub_subscription_iam_member.audit_dead_letter_subscriber
  to   = module.audit.google_pubsub_subscription_iam_member.dead_letter_subscriber["bigquery"]
}

# ---- the CDC changelog (docs/cdc.md) ----------------------------------------------------------
# ingest_changes publishes one message per change, its data one changelog_<table> row as JSON and its
# attribute `table` the source table, and acknowledges the change only once Pub/Sub has stored it. One
# BigQuery subscription per table, filtered on that attribute, writes the rows: no BigQuery call on the
# acknowledgement's path. Delivery is at least once (no insertId): readers use the changelog_<table>_dedup
# views.

module "changelog" {
  source = "../bigquery_topic"

  project_id = var.project_id
  name       = var.changelog_topic
  dataset    = var.dataset
  subscriptions = { for table in var.changelog_tables : "${replace(table, "_", "-")}-bigquery" => {
    table  = "changelog_${table}"
    filter = "attributes.table = \"${table}\""
  } }
  pubsub_agent          = local.pubsub_agent
  max_delivery_attempts = var.max_delivery_attempts
  labels                = var.labels
}
