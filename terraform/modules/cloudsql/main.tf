# Cloud SQL for PostgreSQL 15: the source of truth when source_of_truth = "cloudsql".
# Private IP only, TLS required, daily backups with point-in-time recovery, logical decoding
# on for change data capture (the CDC relay reads a logical replication slot).

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_79:PostgreSQL 15 is the version the project targets: sql/postgres, the local stack and the CockroachDB compatibility notes are written and tested against 15.
  #checkov:skip=CKV_GCP_108:log_hostname makes the server reverse-resolve every new connection; clients arrive through the connector from private addresses with no PTR records, so it adds connection latency and logs nothing log_connections does not.
  #checkov:skip=CKV2_GCP_13:log_duration writes a line for every statement, thousands a second on the read fallback path; slow statements are found with Query Insights (enabled below) instead.
  project             = var.project_id
  name                = var.name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.tier
    edition                     = "ENTERPRISE"
    availability_type           = var.availability_type
    disk_type                   = "PD_SSD"
    disk_size                   = var.disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.deletion_protection

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network_id
      # TLS with a client certificate issued by Cloud SQL: only the Cloud SQL connectors (the
      # functions use the Python connector through FS_POSTGRES_INSTANCE_CONNECTION_NAME; fs-migrate
      # and the CDC relay use it or the Auth Proxy) get one, after an IAM check (cloudsql.client).
      ssl_mode = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "02:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 4
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = false
    }

    # Explicit, so the functions' pools can be sized against it (variable "functions").
    database_flags {
      name  = "max_connections"
      value = tostring(var.max_connections)
    }
    database_flags {
      name  = "cloudsql.logical_decoding"
      value = "on"
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "pgaudit.log"
      value = "ddl,role"
    }
  }

  depends_on = [var.private_services_connection]
}

resource "google_sql_database" "this" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.database
}

resource "random_password" "app" {
  length  = 32
  special = false
}

# The functions' login; its password lives in Secret Manager (modules/secrets) and reaches
# them as FS_POSTGRES_PASSWORD.
resource "google_sql_user" "app" {
  project  = var.project_id
  instance = google_sql_database_instance.this.name
  name     = var.user
  password = random_password.app.result
}
