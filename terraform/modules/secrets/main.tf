# Secret Manager: every credential a function reads. Terraform writes a version for the
# secrets whose value it knows (the Cloud SQL password it generated, the Redis URL with the
# AUTH string Memorystore generated); the others (the CockroachDB password) are created
# empty and filled by an operator with `gcloud secrets versions add`, so the value never
# passes through Terraform state. Functions read version "latest", at instance start.

resource "google_secret_manager_secret" "this" {
  for_each = var.secrets

  project   = var.project_id
  secret_id = each.key
  labels    = var.labels

  annotations = {
    description = each.value
  }

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "managed" {
  for_each = toset(var.managed_versions)

  secret      = google_secret_manager_secret.this[each.key].id
  secret_data = var.values[each.key]
}
