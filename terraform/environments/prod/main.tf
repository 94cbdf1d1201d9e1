# Production: every function, topic, store, workflow, job and alert of the feature store.
# Plan and apply: docs/deploy.md. Cloud Build (cloudbuild.yaml) packages the functions,
# uploads one zip per function to the source bucket, then runs `terraform apply` here with
# source_version = the commit.

locals {
  labels = {
    app         = "feature-store"
    environment = "prod"
  }

  # The functions read Cloud SQL only when it is the source of truth; the instance stays up
  # while cloudsql_enabled, so switching to CockroachDB does not delete it mid-migration.
  cloudsql          = var.source_of_truth == "cloudsql"
  cloudsql_deployed = local.cloudsql || var.cloudsql_enabled

  apis = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "vpcaccess.googleapis.com",
    "workflowexecutions.googleapis.com",
    "workflows.googleapis.com",
  ])

  # Every workflows/*.yaml is deployed as a workflow named after the file: a new file needs no
  # change here (tests/infra/test_terraform.py checks this fileset covers workflows/).
  workflows_dir  = "${path.module}/../../../workflows"
  workflow_files = fileset("${path.module}/../../../workflows", "*.yaml")
  workflows      = { for f in local.workflow_files : trimsuffix(f, ".yaml") => file("${local.workflows_dir}/${f}") }
}

resource "google_project_service" "this" {
  for_each = local.apis

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# ---- network and stores ---------------------------------------------------------------------

module "network" {
  source = "../../modules/network"

  project_id = var.project_id
  region     = var.region

  depends_on = [google_project_service.this]
}

module "redis" {
  source = "../../modules/redis"

  project_id                  = var.project_id
  region                      = var.region
  network_id                  = module.network.network_id
  private_services_connection = module.network.private_services_connection
}

module "cloudsql" {
  source = "../../modules/cloudsql"
  count  = local.cloudsql_deployed ? 1 : 0

  project_id                  = var.project_id
  region                      = var.region
  network_id                  = module.network.network_id
  private_services_connection = module.network.private_services_connection
}

module "bigquery" {
  source = "../../modules/bigquery"

  project_id           = var.project_id
  location             = var.bigquery_location
  labels               = local.labels
  audit_retention_days = var.audit_retention_days

  depends_on = [google_project_service.this]
}

# Generated once and kept (in state, like the Cloud SQL password): a new value would invalidate every API key.
resource "random_password" "auth_key_pepper" {
  length  = 48
  special = false
}

module "secrets" {
  source = "../../modules/secrets"

  project_id = var.project_id
  region     = var.region
  labels     = local.labels

  secrets = {
    fs-postgres-password  = "Password of the functions' Cloud SQL login (FS_POSTGRES_PASSWORD); written by Terraform."
    fs-redis-url          = "FS_REDIS_URL: rediss:// URL of Memorystore carrying its AUTH string and CA; written by Terraform."
    fs-cockroach-password = "Password of the functions' CockroachDB login (FS_POSTGRES_PASSWORD when source_of_truth = cockroachdb); added by an operator."
    # The migration's target (docs/migration.md): the CockroachDB cluster the source of truth moves to.
    fs-migration-target-password = "Password of the migration's login on the CockroachDB target (FS_MIGRATION_TARGET_PASSWORD); added by an operator."
    # API keys are stored as HMAC-SHA256(pepper, secret) (docs/security.md); the read functions and the gRPC
    # service refuse to start without it. Changing it invalidates every key: rotate keys, not the pepper.
    fs-auth-key-pepper = "FS_AUTH_KEY_PEPPER: the HMAC key API key secrets are stored under; written by Terraform."
  }
  managed_versions = concat(["fs-redis-url", "fs-auth-key-pepper"], local.cloudsql_deployed ? ["fs-postgres-password"] : [])
  values = {
    fs-redis-url         = module.redis.url
    fs-postgres-password = local.cloudsql_deployed ? module.cloudsql[0].password : ""
    fs-auth-key-pepper   = random_password.auth_key_pepper.result
  }

  depends_on = [google_project_service.this]
}

# ---- what each kind of access gives a function ----------------------------------------------
# Only names from feature_store.settings.known_env_vars() may appear as environment variables
# (checked by tests/infra/test_terraform.py).

locals {
  common_env = {
    FS_LOG_LEVEL = var.log_level
  }

  # The source of truth, switched by var.source_of_truth.
  source_env = {
    cloudsql = {
      # Through the Cloud SQL Python connector: TLS and authorisation by IAM (cloudsql.client).
      FS_POSTGRES_INSTANCE_CONNECTION_NAME = local.cloudsql ? module.cloudsql[0].connection_name : ""
      FS_POSTGRES_DATABASE                 = local.cloudsql ? module.cloudsql[0].database : ""
      FS_POSTGRES_USER                     = local.cloudsql ? module.cloudsql[0].user : ""
      FS_POSTGRES_DIALECT                  = "postgresql"
    }
    cockroachdb = {
      FS_POSTGRES_HOST     = var.cockroach_host
      FS_POSTGRES_PORT     = tostring(var.cockroach_port)
      FS_POSTGRES_DATABASE = var.cockroach_database
      FS_POSTGRES_USER     = var.cockroach_user
      FS_POSTGRES_DIALECT  = "cockroachdb"
      FS_POSTGRES_SSL      = "true"
    }
  }
  source_secret_env = {
    cloudsql    = { FS_POSTGRES_PASSWORD = module.secrets.ids["fs-postgres-password"] }
    cockroachdb = { FS_POSTGRES_PASSWORD = module.secrets.ids["fs-cockroach-password"] }
  }

  access_env = {
    postgres = local.source_env[var.source_of_truth]
    redis    = {}
    bigquery = {
      FS_BIGQUERY_PROJECT  = var.project_id
      FS_BIGQUERY_DATASET  = module.bigquery.dataset_id
      FS_BIGQUERY_LOCATION = var.bigquery_location
    }
    serving = {
      FS_SERVING_FEATURE_SET = var.feature_set
      # Only principals with run.invoker reach the read functions and the gRPC service, and Cloud Run has
      # verified their ID token by then: the function reads its claims (docs/security.md).
      FS_AUTH_GOOGLE_PLATFORM_VERIFIED = "true"
    }
    # The audit trail of reads: one message per (read, user) on audit-reads, written to audit_reads by a
    # BigQuery subscription (modules/pubsub).
    audit = {
      FS_AUDIT_SINK        = "pubsub"
      FS_AUDIT_TOPIC       = local.audit_topic
      FS_AUDIT_FAIL_CLOSED = tostring(var.audit_fail_closed)
      FS_PUBSUB_PROJECT    = var.project_id
    }
    # The CDC changelog: one message per change on cdc-changelog, written to changelog_<table> by one
    # BigQuery subscription per table (modules/pubsub); no streaming insert on the acknowledgement's path.
    changelog = {
      FS_CDC_CHANGELOG_SINK  = "pubsub"
      FS_CDC_CHANGELOG_TOPIC = local.changelog_topic
      FS_PUBSUB_PROJECT      = var.project_id
    }
    # The migration's target: set only while a migration runs (var.migration_target_host); every function
    # that reads the source then routes each user's reads by the pointer in Redis (docs/migration.md).
    migration = local.migrating ? {
      FS_MIGRATION_TARGET_HOST     = var.migration_target_host
      FS_MIGRATION_TARGET_PORT     = tostring(var.migration_target_port)
      FS_MIGRATION_TARGET_DATABASE = var.migration_target_database
      FS_MIGRATION_TARGET_USER     = var.migration_target_user
      FS_MIGRATION_TARGET_DIALECT  = "cockroachdb"
      FS_MIGRATION_TARGET_SSL      = "true"
    } : {}
  }

  access_secret_env = {
    postgres  = local.source_secret_env[var.source_of_truth]
    redis     = { FS_REDIS_URL = module.secrets.ids["fs-redis-url"] }
    bigquery  = {}
    serving   = { FS_AUTH_KEY_PEPPER = module.secrets.ids["fs-auth-key-pepper"] }
    audit     = {}
    changelog = {}
    migration = local.migrating ? { FS_MIGRATION_TARGET_PASSWORD = module.secrets.ids["fs-migration-target-password"] } : {}
  }

  access_project_roles = {
    postgres = local.cloudsql ? ["roles/cloudsql.client"] : []
    redis    = []
    # Running a query or load job is a project permission; the data grant is on the dataset.
    bigquery  = ["roles/bigquery.jobUser"]
    serving   = []
    audit     = []
    changelog = []
    migration = []
  }

  access_dataset_roles = {
    postgres  = {}
    redis     = {}
    bigquery  = { (module.bigquery.dataset_id) = "roles/bigquery.dataEditor" }
    serving   = {}
    audit     = {}
    changelog = {}
    migration = {}
  }

  callers = {
    clients     = { for member in var.read_clients : member => member }
    auditors    = { for member in var.receipt_clients : member => member }
    deployer    = var.deployer_member == "" ? {} : { deployer = var.deployer_member }
    pubsub_push = { pubsub_push = module.pubsub.push_member }
    scheduler   = { scheduler = module.scheduler.service_account_member }
    workflows   = { workflows = module.workflows.service_account_member }
  }

  # Named here, not read from module.pubsub: every function's environment names it, and the pubsub module
  # needs the ingest function's URL.
  audit_topic     = "audit-reads"
  changelog_topic = "cdc-changelog"

  # The two push subscriptions of cdc-changes: ingestion, and the migration's replication.
  ingest_function    = "ingest_changes"
  replicate_function = "replicate_changes"
  migrating          = var.migration_target_host != ""
}

# ---- functions ------------------------------------------------------------------------------

resource "google_storage_bucket" "function_sources" {
  #checkov:skip=CKV_GCP_62:Access logs of this bucket would only record Cloud Build uploads and Cloud Functions builds reading their zip; Cloud Audit Logs already record both.
  project                     = var.project_id
  name                        = "${var.project_id}-fs-function-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }
}

# Cloud Build builds each function's container as this identity (not the default compute one).
resource "google_service_account" "function_build" {
  project      = var.project_id
  account_id   = "fs-function-build"
  display_name = "Feature store function builds"
}

resource "google_project_iam_member" "function_build" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.function_build.email}"
}

resource "google_storage_bucket_iam_member" "function_build_reads_sources" {
  bucket = google_storage_bucket.function_sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.function_build.email}"
}

module "function" {
  source   = "../../modules/function"
  for_each = var.functions

  project_id            = var.project_id
  region                = var.region
  name                  = each.key
  description           = each.value.description
  labels                = local.labels
  source_bucket         = google_storage_bucket.function_sources.name
  source_object         = "functions/${each.key}/${var.source_version}.zip"
  build_service_account = google_service_account.function_build.id
  vpc_connector         = module.network.connector_id

  min_instances = each.value.min_instances
  max_instances = each.value.max_instances
  concurrency   = each.value.concurrency
  cpu           = each.value.cpu
  memory        = each.value.memory
  timeout_s     = each.value.timeout_s
  ingress       = each.value.ingress

  environment        = merge(concat([local.common_env], [for a in each.value.access : local.access_env[a]], [each.value.env])...)
  secret_environment = merge(concat([{}], [for a in each.value.access : local.access_secret_env[a]])...)
  project_roles      = toset(flatten([for a in each.value.access : local.access_project_roles[a]]))
  dataset_roles      = merge(concat([{}], [for a in each.value.access : local.access_dataset_roles[a]])...)
  invokers           = merge(concat([{}], [for c in each.value.invokers : local.callers[c]])...)

  depends_on = [google_project_service.this, google_storage_bucket_iam_member.function_build_reads_sources]
}

# ---- gRPC: featurestore.v1 on Cloud Run (Cloud Functions do not serve gRPC) ------------------
# The read function's identity, secrets, environment, VPC access, invokers and alerts: the same reader
# served over another transport (docs/grpc.md).

locals {
  grpc_like = var.functions[var.grpc.same_as]
}

module "grpc_service" {
  source = "../../modules/grpc_service"

  project_id            = var.project_id
  region                = var.region
  name                  = var.grpc.name
  description           = "featurestore.v1 over gRPC (end-to-end HTTP/2): the reads of ${var.grpc.same_as} and read_features_batch."
  labels                = local.labels
  image                 = var.grpc_image
  service_account_email = module.function[var.grpc.same_as].service_account_email
  vpc_connector         = module.network.connector_id

  min_instances = var.grpc.min_instances
  max_instances = var.grpc.max_instances
  concurrency   = var.grpc.concurrency
  cpu           = var.grpc.cpu
  memory        = var.grpc.memory
  timeout_s     = local.grpc_like.timeout_s
  ingress       = var.grpc.ingress
  workers       = var.grpc.workers
  threads       = var.grpc.threads

  environment        = merge(concat([local.common_env], [for a in local.grpc_like.access : local.access_env[a]], [local.grpc_like.env])...)
  secret_environment = merge(concat([{}], [for a in local.grpc_like.access : local.access_secret_env[a]])...)
  invokers           = merge(concat([{}], [for c in local.grpc_like.invokers : local.callers[c]])...)

  # The function module grants its account the secrets; the service starts only once it can read them.
  depends_on = [module.function]
}

# ---- events, orchestration, schedules -------------------------------------------------------

module "pubsub" {
  source = "../../modules/pubsub"

  project_id           = var.project_id
  topic                = "cdc-changes"
  push_endpoint        = module.function[local.ingest_function].uri
  ack_deadline_seconds = var.functions[local.ingest_function].timeout_s
  # The second subscription on the same topic: every change also reaches the migration's replication.
  replicate_endpoint             = contains(keys(var.functions), local.replicate_function) ? module.function[local.replicate_function].uri : ""
  replicate_ack_deadline_seconds = contains(keys(var.functions), local.replicate_function) ? var.functions[local.replicate_function].timeout_s : 60
  publishers                     = { for member in var.cdc_publishers : member => member }
  labels                         = local.labels
  # The audit trail: topic audit-reads and its BigQuery subscription into audit_reads.
  audit_topic = local.audit_topic
  dataset     = module.bigquery.dataset_id
  audit_table = module.bigquery.audit_table
  # The CDC changelog: topic cdc-changelog and one BigQuery subscription per changelog_<table>.
  changelog_topic = local.changelog_topic
}

locals {
  function_members    = { for name, fn in module.function : name => "serviceAccount:${fn.service_account_email}" }
  audit_functions     = { for name, fn in var.functions : name => fn.access if contains(fn.access, "audit") }
  changelog_functions = { for name, fn in var.functions : name => fn.access if contains(fn.access, "changelog") }
}

# Functions with "audit" access publish their reads' audit rows (the gRPC service shares read_features' account).
resource "google_pubsub_topic_iam_member" "audit_publishers" {
  for_each = local.audit_functions

  project = var.project_id
  topic   = module.pubsub.audit_topic
  role    = "roles/pubsub.publisher"
  member  = local.function_members[each.key]
}

# Functions with "changelog" access publish the changes they apply to the changelog topic (ingest_changes).
resource "google_pubsub_topic_iam_member" "changelog_publishers" {
  for_each = local.changelog_functions

  project = var.project_id
  topic   = module.pubsub.changelog_topic
  role    = "roles/pubsub.publisher"
  member  = local.function_members[each.key]
}

module "workflows" {
  source = "../../modules/workflows"

  project_id = var.project_id
  region     = var.region
  workflows  = local.workflows
  labels     = local.labels
  # RUN_ETL_URL, REFRESH_CACHE_URL, ...: the workflows call the functions by these.
  env = { for name, fn in module.function : "${upper(name)}_URL" => fn.uri }

  depends_on = [google_project_service.this]
}

module "scheduler" {
  source = "../../modules/scheduler"

  project_id      = var.project_id
  region          = var.region
  etl_workflow_id = module.workflows.ids[var.etl_workflow]
  refresh_url     = module.function["refresh_cache"].uri

  depends_on = [google_project_service.this]
}

# ---- alerts ---------------------------------------------------------------------------------

module "monitoring" {
  source = "../../modules/monitoring"

  project_id            = var.project_id
  services              = merge({ for name, fn in module.function : name => basename(fn.service) }, { (var.grpc.name) = module.grpc_service.name })
  read_latency_p95_ms   = merge({ for name, fn in var.functions : name => fn.p95_target_ms if fn.p95_target_ms != null }, { (var.grpc.name) = var.grpc.p95_target_ms })
  notification_channels = var.notification_channels

  depends_on = [google_project_service.this]
}
