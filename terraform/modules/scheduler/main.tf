# Cloud Scheduler: the daily ETL (starts an execution of the ETL workflow through the
# Workflow Executions API, authenticated with an OAuth token as Google APIs require) and the
# incremental cache refresh every 5 minutes (calls the refresh_cache function directly,
# authenticated with an OIDC token whose audience is the function URL).

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = "fs-scheduler"
  display_name = "Feature store scheduler"
  description  = "Starts the ETL workflow and calls refresh_cache on schedule."
}

resource "google_project_iam_member" "workflows_invoker" {
  project = var.project_id
  role    = "roles/workflows.invoker"
  member  = "serviceAccount:${google_service_account.this.email}"
}

resource "google_cloud_scheduler_job" "etl_daily" {
  project          = var.project_id
  region           = var.region
  name             = "etl-daily"
  description      = "Runs the ETL workflow once a day."
  schedule         = var.etl_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count          = 3
    min_backoff_duration = "60s"
  }

  http_target {
    http_method = "POST"
    uri         = "https://workflowexecutions.googleapis.com/v1/${var.etl_workflow_id}/executions"
    headers = {
      "Content-Type" = "application/json"
    }
    # Executions take their argument as a JSON string; an empty object lets the workflow
    # choose its defaults (the run since the last watermark).
    body = base64encode(jsonencode({ argument = jsonencode(var.etl_argument) }))

    oauth_token {
      service_account_email = google_service_account.this.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }
}

resource "google_cloud_scheduler_job" "refresh_incremental" {
  project          = var.project_id
  region           = var.region
  name             = "refresh-cache-incremental"
  description      = "Refreshes the online store from what changed since the last run."
  schedule         = var.refresh_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "${var.refresh_deadline_s}s"

  # The next run comes in 5 minutes and picks up where this one stopped: no retries that
  # could overlap it.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = var.refresh_url
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode(var.refresh_body))

    oidc_token {
      service_account_email = google_service_account.this.email
      audience              = var.refresh_url
    }
  }
}
