# Cloud Workflows: one workflow per YAML file the environment passes in (it builds the map
# from fileset() over workflows/, so a new file is deployed without touching Terraform).
# All run as one service account that may call the functions listed as their targets.

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = "fs-workflows"
  display_name = "Feature store workflows"
  description  = "Runs the workflows in workflows/; may invoke the functions they call."
}

# Execution logs (sys.log and call logging) are written as this identity.
resource "google_project_iam_member" "log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.this.email}"
}

resource "google_workflows_workflow" "this" {
  for_each = var.workflows

  project         = var.project_id
  region          = var.region
  name            = each.key
  description     = "Deployed from workflows/${each.key}.yaml"
  service_account = google_service_account.this.id
  source_contents = each.value
  call_log_level  = "LOG_ERRORS_ONLY"
  labels          = var.labels
  # Read by the YAML with sys.get_env(): the URL of each function, e.g. RUN_ETL_URL.
  user_env_vars = var.env
}
