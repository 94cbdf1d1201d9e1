variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, stores, workflows and jobs."
  type        = string
  default     = "us-central1"
}

variable "bigquery_location" {
  description = "Location of the BigQuery dataset (FS_BIGQUERY_LOCATION)."
  type        = string
  default     = "US"
}

variable "source_version" {
  description = "Version of the packaged function sources to deploy: the commit Cloud Build uploaded as functions/<name>/<version>.zip."
  type        = string
}

variable "source_of_truth" {
  description = "Where the functions read the source of truth: \"cloudsql\" (Cloud SQL for PostgreSQL 15, declared here) or \"cockroachdb\" (an existing cluster, see the cockroach_* variables)."
  type        = string
  default     = "cloudsql"

  validation {
    condition     = contains(["cloudsql", "cockroachdb"], var.source_of_truth)
    error_message = "source_of_truth must be \"cloudsql\" or \"cockroachdb\"."
  }
}

variable "cloudsql_enabled" {
  description = "Keep the Cloud SQL instance when source_of_truth = \"cockroachdb\" (set false once the migration is done; deletion_protection must be lifted first)."
  type        = bool
  default     = true
}

variable "cockroach_host" {
  description = "CockroachDB SQL host (when source_of_truth = \"cockroachdb\"); its password is the secret fs-cockroach-password."
  type        = string
  default     = ""

  validation {
    condition     = var.cockroach_host == "" || can(regex("^[A-Za-z0-9.-]+$", var.cockroach_host))
    error_message = "cockroach_host must be a host name or address."
  }
}

variable "cockroach_port" {
  description = "CockroachDB SQL port."
  type        = number
  default     = 26257
}

variable "cockroach_database" {
  description = "CockroachDB database."
  type        = string
  default     = "feature_store"
}

variable "cockroach_user" {
  description = "CockroachDB login of the functions."
  type        = string
  default     = "feature_store"
}

variable "migration_target_host" {
  description = "SQL host of the CockroachDB cluster the source of truth is moving to (docs/migration.md); empty: no migration configured. Its password is the secret fs-migration-target-password."
  type        = string
  default     = ""

  validation {
    condition     = var.migration_target_host == "" || can(regex("^[A-Za-z0-9.-]+$", var.migration_target_host))
    error_message = "migration_target_host must be a host name or address."
  }
}

variable "migration_target_port" {
  description = "SQL port of the migration's target."
  type        = number
  default     = 26257
}

variable "migration_target_database" {
  description = "Database of the migration's target."
  type        = string
  default     = "feature_store"
}

variable "migration_target_user" {
  description = "Login of the migration on its target (it writes: backfill, replication, repairs)."
  type        = string
  default     = "feature_store"
}

variable "feature_set" {
  description = "Feature set served when a request names none (FS_SERVING_FEATURE_SET)."
  type        = string
  default     = "credit_decision"
}

variable "log_level" {
  description = "FS_LOG_LEVEL of every function."
  type        = string
  default     = "INFO"
}

variable "read_clients" {
  description = "IAM members (e.g. serviceAccount:decisions@...) allowed to call the read functions."
  type        = list(string)
  default     = []
}

variable "deployer_member" {
  description = "IAM member Cloud Build runs as; it may call read_features for the post-deploy smoke test. Empty: none."
  type        = string
  default     = ""
}

variable "receipt_clients" {
  description = "IAM members (a lender's audit or dispute team) allowed to call read_receipt: it shows who read whom."
  type        = list(string)
  default     = []
}

variable "audit_fail_closed" {
  description = "Refuse reads (503 audit_unavailable) while their audit records cannot be kept (FS_AUDIT_FAIL_CLOSED)."
  type        = bool
  default     = true
}

variable "audit_retention_days" {
  description = "Days an audit_reads partition (one day of reads) is kept before BigQuery deletes it."
  type        = number
  default     = 2557 # seven years: the longest record-keeping rule lenders commonly face; shorten per jurisdiction
}

variable "cdc_publishers" {
  description = "IAM members (the CDC relay) allowed to publish to cdc-changes."
  type        = list(string)
  default     = []
}

variable "notification_channels" {
  description = "Monitoring notification channel ids for every alert."
  type        = list(string)
  default     = []
}

variable "etl_workflow" {
  description = "Name of the workflow the daily scheduler job runs (a file workflows/<name>.yaml)."
  type        = string
  default     = "etl"
}

# The functions, one entry per folder functions/<name>/ (name = folder = entry point).
# tests/infra/test_terraform.py enforces that this map matches functions/: every folder with
# a main.py has an entry whose name is a function defined in that main.py, with the decorator
# matching its trigger, and every entry has a folder (or is listed there as planned).
#   trigger  "http" (called over HTTPS) or "pubsub" (fed by a cdc-changes push subscription: ingest_changes,
#            and replicate_changes for the migration; the code is a CloudEvent function, see modules/pubsub)
#   access   what it talks to; sets its environment, secrets and IAM (locals in main.tf):
#            postgres | redis | bigquery | serving | migration (the migration's target, while one runs)
#            | audit (publishes the audit trail of its reads to the audit-reads topic)
#            | changelog (publishes the changes it applies to the cdc-changelog topic)
#   invokers who may call it: clients (var.read_clients) | auditors (var.receipt_clients) | deployer | pubsub_push
#            | scheduler | workflows
#   p95_target_ms  alert when its P95 latency is above this (read path only)
#   env      extra plain settings; names must be in feature_store.settings.known_env_vars()
# Connections: the sum over functions of max_instances x FS_POSTGRES_POOL_SIZE stays within
# the Cloud SQL instance's max_connections (modules/cloudsql), less room for the CDC relay and
# migrations; tests/infra/test_terraform.py checks the sum.
variable "functions" {
  description = "Function name => deployment settings."
  type = map(object({
    description   = string
    trigger       = string
    access        = list(string)
    invokers      = list(string)
    min_instances = number
    max_instances = number
    concurrency   = number
    cpu           = string
    memory        = string
    timeout_s     = number
    ingress       = string
    p95_target_ms = optional(number)
    env           = optional(map(string), {})
  }))

  default = {
    read_features = {
      description = "GET one user's feature vector: Redis first, PostgreSQL on a miss."
      trigger     = "http"
      access      = ["postgres", "redis", "serving", "migration", "audit"]
      invokers    = ["clients", "deployer"]
      # Warm instances: a cold start costs seconds and the read path promises 40 ms at P95.
      min_instances = 2
      max_instances = 60
      concurrency   = 40
      cpu           = "1"
      memory        = "512Mi"
      timeout_s     = 10
      ingress       = "ALLOW_ALL"
      p95_target_ms = 40
      env = {
        FS_REDIS_SOCKET_TIMEOUT_MS = "25"
        # PostgreSQL serves only cache misses: a few connections per instance suffice.
        FS_POSTGRES_POOL_SIZE = "4"
      }
    }
    read_features_batch = {
      description   = "POST many user ids, get one vector each (one Redis round trip per batch)."
      trigger       = "http"
      access        = ["postgres", "redis", "serving", "migration", "audit"]
      invokers      = ["clients"]
      min_instances = 1
      max_instances = 20
      concurrency   = 8
      cpu           = "2"
      memory        = "1Gi"
      timeout_s     = 30
      ingress       = "ALLOW_ALL"
      p95_target_ms = 250
      env = {
        FS_SERVING_BATCH_MAX  = "1000"
        FS_POSTGRES_POOL_SIZE = "4"
      }
    }
    ingest_changes = {
      description   = "Apply change events from cdc-changes to Redis (compare-and-set on the watermark) and publish them to cdc-changelog, whose BigQuery subscriptions write the changelogs."
      trigger       = "pubsub"
      access        = ["postgres", "redis", "migration", "changelog"]
      invokers      = ["pubsub_push"]
      min_instances = 0
      max_instances = 20
      concurrency   = 8
      cpu           = "1"
      memory        = "512Mi"
      timeout_s     = 60
      ingress       = "ALLOW_INTERNAL_ONLY"
      env = {
        FS_POSTGRES_POOL_SIZE = "2"
      }
    }
    refresh_cache = {
      description   = "Recompute vectors changed since the last run (every 5 minutes) or all of them."
      trigger       = "http"
      access        = ["postgres", "redis", "migration"]
      invokers      = ["scheduler", "workflows"]
      min_instances = 0
      max_instances = 3
      # FS_REFRESH_WORKERS (2) source statements run while a chunk is written: 2 vCPUs.
      concurrency = 1
      cpu         = "2"
      memory      = "2Gi"
      timeout_s   = 300
      ingress     = "ALLOW_INTERNAL_ONLY"
      env = {
        FS_POSTGRES_POOL_SIZE = "4"
      }
    }
    replicate_changes = {
      description   = "Apply the changes of cdc-changes (a second subscription) to the migration's other database, newest position wins; back from CockroachDB after the cutover."
      trigger       = "pubsub"
      access        = ["postgres", "redis", "migration"]
      invokers      = ["pubsub_push"]
      min_instances = 0
      max_instances = 10
      concurrency   = 8
      cpu           = "1"
      memory        = "512Mi"
      timeout_s     = 60
      ingress       = "ALLOW_INTERNAL_ONLY"
      env = {
        FS_POSTGRES_POOL_SIZE = "2"
      }
    }
    run_migration = {
      description   = "One phase of the move to CockroachDB per call (called by the migration workflow): prepare, backfill, verify, shift, cutover, rollback."
      trigger       = "http"
      access        = ["postgres", "redis", "migration"]
      invokers      = ["workflows"]
      min_instances = 0
      max_instances = 1
      # One phase at a time; a chunk of COPY text is held in memory while it lands.
      concurrency = 1
      cpu         = "2"
      memory      = "2Gi"
      timeout_s   = 600
      ingress     = "ALLOW_INTERNAL_ONLY"
      env = {
        FS_POSTGRES_POOL_SIZE      = "2"
        FS_MIGRATION_STEP_BUDGET_S = "240"
        FS_MIGRATION_CHUNK_ROWS    = "50000"
      }
    }
    run_etl = {
      description   = "Load changes and snapshots from the source of truth into BigQuery (called by the ETL workflow)."
      trigger       = "http"
      access        = ["postgres", "bigquery"]
      invokers      = ["workflows"]
      min_instances = 0
      max_instances = 2
      # Export batches are staged in /tmp, which is memory on Cloud Functions.
      concurrency = 1
      cpu         = "2"
      memory      = "4Gi"
      timeout_s   = 1800
      ingress     = "ALLOW_INTERNAL_ONLY"
      env = {
        FS_POSTGRES_POOL_SIZE = "2"
      }
    }
    read_receipt = {
      description = "GET /api/v1/receipts/{request_id}: a read's audit record, each vector recomputed from BigQuery."
      trigger     = "http"
      # Settings requires a source of truth; this function never opens a connection to it.
      access        = ["postgres", "bigquery"]
      invokers      = ["auditors"]
      min_instances = 0
      max_instances = 5
      concurrency   = 4
      cpu           = "1"
      memory        = "512Mi"
      timeout_s     = 120
      ingress       = "ALLOW_ALL"
      env = {
        FS_POSTGRES_POOL_SIZE = "1"
      }
    }
  }

  validation {
    condition = alltrue([
      for name, fn in var.functions : contains(["http", "pubsub"], fn.trigger)
      && contains(fn.access, "postgres")
      && alltrue([for a in fn.access : contains(["postgres", "redis", "bigquery", "serving", "migration", "audit", "changelog"], a)])
      && alltrue([for i in fn.invokers : contains(["clients", "auditors", "deployer", "pubsub_push", "scheduler", "workflows"], i)])
    ])
    error_message = "Each function needs trigger http|pubsub, access including postgres (Settings requires it) and from postgres|redis|bigquery|serving|migration|audit|changelog and invokers from clients|auditors|deployer|pubsub_push|scheduler|workflows."
  }

  validation {
    condition = (try(var.functions["ingest_changes"].trigger, "") == "pubsub"
    && alltrue([for name, fn in var.functions : fn.trigger != "pubsub" || contains(["ingest_changes", "replicate_changes"], name)]))
    error_message = "cdc-changes has two push subscriptions: ingest_changes (required) and replicate_changes (the migration's); no other function may have trigger = \"pubsub\"."
  }
}

variable "grpc_image" {
  description = "Image of the gRPC service, built and pushed by Cloud Build from shared/grpc.Dockerfile (<registry>/feature-store-grpc:<version>)."
  type        = string
}

variable "grpc" {
  description = "The gRPC service (featurestore.v1 on Cloud Run): sized like the read functions, with their identity."
  type = object({
    name          = string
    same_as       = string # the read function whose account, secrets, environment and invokers it shares
    min_instances = number
    max_instances = number
    concurrency   = number
    cpu           = string
    memory        = string
    ingress       = string
    workers       = number
    threads       = number
    p95_target_ms = number
  })
  default = {
    name          = "feature-store-grpc"
    same_as       = "read_features"
    min_instances = 2
    max_instances = 20
    concurrency   = 32
    cpu           = "2"
    memory        = "1Gi"
    ingress       = "INGRESS_TRAFFIC_ALL"
    workers       = 2
    threads       = 16
    p95_target_ms = 30 # the README's promise for gRPC (GetUserFeatures, P95 under 30 ms)
  }
}
