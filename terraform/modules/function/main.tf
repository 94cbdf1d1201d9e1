# One Cloud Function (2nd gen) with its own service account and only the grants it needs:
# the secrets named in its environment, the project roles listed for it, and the callers
# allowed to invoke it. The source is the zip that .ci/package_functions.py built and Cloud
# Build uploaded (main.py + feature_store/ + requirements.txt); entry point = function name.

locals {
  # Service account ids: 6-30 characters, lowercase letters, digits and hyphens.
  account_id = substr("fn-${replace(var.name, "_", "-")}", 0, 30)
}

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = local.account_id
  display_name = "Cloud Function ${var.name}"
  description  = "Runs ${var.name}; its grants are declared in terraform/modules/function."
}

resource "google_project_iam_member" "this" {
  for_each = var.project_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.this.email}"
}

resource "google_secret_manager_secret_iam_member" "this" {
  for_each = var.secret_environment

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.this.email}"
}

resource "google_bigquery_dataset_iam_member" "this" {
  for_each = var.dataset_roles

  project    = var.project_id
  dataset_id = each.key
  role       = each.value
  member     = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloudfunctions2_function" "this" {
  project     = var.project_id
  location    = var.region
  name        = var.name
  description = var.description
  labels      = var.labels

  build_config {
    runtime         = "python311"
    entry_point     = var.name
    service_account = var.build_service_account

    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
  }

  service_config {
    min_instance_count               = var.min_instances
    max_instance_count               = var.max_instances
    max_instance_request_concurrency = var.concurrency
    available_cpu                    = var.cpu
    available_memory                 = var.memory
    timeout_seconds                  = var.timeout_s
    ingress_settings                 = var.ingress
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.this.email
    vpc_connector                    = var.vpc_connector
    # Only the private ranges (Redis, Cloud SQL) go through the connector; Google APIs are
    # reached directly, which keeps the connector's throughput for the stores.
    vpc_connector_egress_settings = "PRIVATE_RANGES_ONLY"

    environment_variables = var.environment

    dynamic "secret_environment_variables" {
      for_each = var.secret_environment
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  # The secrets must be readable before the first revision starts, or it fails to boot.
  depends_on = [google_secret_manager_secret_iam_member.this]
}

# A 2nd gen function is served by a Cloud Run service: invoking it needs run.invoker there.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invokers

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
