# Memorystore for Redis: the online store. AUTH on, TLS on (SERVER_AUTHENTICATION: clients
# connect with rediss:// on port 6378 and verify the instance's own CA), private IP only.

resource "google_redis_instance" "this" {
  project                 = var.project_id
  name                    = var.name
  region                  = var.region
  tier                    = var.tier
  memory_size_gb          = var.memory_size_gb
  redis_version           = var.redis_version
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  authorized_network      = var.network_id
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"

  redis_configs = {
    # Vectors carry a TTL (FS_REDIS_TTL_SECONDS); when memory runs out, evict the least recently
    # used of them rather than failing writes: a missing vector falls back to PostgreSQL. Keys
    # without a TTL (the served-version pointer, run checkpoints) are never evicted (docs/capacity.md).
    maxmemory-policy = "volatile-lru"
  }

  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 4
        minutes = 0
      }
    }
  }

  depends_on = [var.private_services_connection]
}

locals {
  # The whole FS_REDIS_URL, kept in Secret Manager because it carries the AUTH string.
  # ssl_ca_data pins the chain to this instance's own CA (redis-py reads the query parameter,
  # parse_qs decodes it). Hostname checking is off because clients connect by IP address and
  # Memorystore does not document an IP subject alternative name in its server certificates;
  # the pinned CA is what authenticates the server.
  ca_pem = join("", [for cert in google_redis_instance.this.server_ca_certs : cert.cert])
  url = format(
    "rediss://:%s@%s:%d/0?ssl_check_hostname=false&ssl_ca_data=%s",
    urlencode(google_redis_instance.this.auth_string),
    google_redis_instance.this.host,
    google_redis_instance.this.port,
    urlencode(local.ca_pem),
  )
}
