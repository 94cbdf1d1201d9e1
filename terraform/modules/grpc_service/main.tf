# The gRPC service (featurestore.v1): a Cloud Run v2 service, because Cloud Functions do not serve gRPC.
# End-to-end HTTP/2: the container port is named "h2c", so Cloud Run forwards HTTP/2 cleartext to fs-grpc.
# It runs as the read function's service account, with the same secrets, VPC connector and egress, the
# same invokers and the same alerts (terraform/environments/prod); the image is built by Cloud Build
# from shared/grpc.Dockerfile (the common package, with its grpc extra).

resource "google_cloud_run_v2_service" "this" {
  project     = var.project_id
  location    = var.region
  name        = var.name
  description = var.description
  labels      = var.labels
  ingress     = var.ingress

  template {
    service_account                  = var.service_account_email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.timeout_s}s"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      connector = var.vpc_connector
      # As the functions: only the private ranges (Redis, Cloud SQL) go through the connector.
      egress = "PRIVATE_RANGES_ONLY"
    }

    containers {
      image = var.image
      args  = ["--address", "0.0.0.0:${var.port}", "--workers", tostring(var.workers), "--threads", tostring(var.threads)]

      ports {
        name           = "h2c"
        container_port = var.port
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = false
        startup_cpu_boost = true
      }

      # grpc.health.v1.Health, which fs-grpc serves: SERVING once listening, NOT_SERVING on SIGTERM.
      startup_probe {
        grpc {
          port    = var.port
          service = "featurestore.v1.FeatureStore"
        }
        period_seconds    = 2
        failure_threshold = 15
      }

      liveness_probe {
        grpc {
          port    = var.port
          service = "featurestore.v1.FeatureStore"
        }
        period_seconds = 10
      }

      dynamic "env" {
        for_each = var.environment
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = var.secret_environment
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }
    }
  }
}

resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invokers

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
