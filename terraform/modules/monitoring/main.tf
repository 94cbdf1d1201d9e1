# Alerts on what the feature store promises: read latency (P95), cache hit rate, server
# errors (5xx), and data freshness. Latency and errors come from the Cloud Run metrics of the
# functions' services; cache hits and freshness from log-based metrics over the JSON lines
# the functions write (feature_store/logs.py).

locals {
  all_services = join(", ", [for s in values(var.services) : format("%q", s)])
}

# One counter per read that reports a cache_hit field (the HTTP edge logs it, http.py).
resource "google_logging_metric" "cache_lookups" {
  project = var.project_id
  name    = "fs_read_cache_lookups"
  filter  = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=\"feature_store.http\" AND jsonPayload.cache_hit:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Feature reads by cache outcome"

    labels {
      key         = "cache_hit"
      value_type  = "STRING"
      description = "\"true\" when the vector came from Redis, else \"false\"."
    }
  }

  label_extractors = {
    cache_hit = "EXTRACT(jsonPayload.cache_hit)"
  }
}

# Reads served without a rate limit because Redis could not be asked (services/reader.py logs
# event = "rate_limit_fail_open" once per such request): the documented fail-open choice, counted here.
resource "google_logging_metric" "rate_limit_fail_open" {
  project = var.project_id
  name    = "fs_rate_limit_fail_open"
  filter  = "resource.type=\"cloud_run_revision\" AND jsonPayload.event=\"rate_limit_fail_open\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Reads served without a rate limit (limiter unavailable)"
  }
}

# Seconds from a change's commit in the source to its write into Redis (ingest_changes).
resource "google_logging_metric" "ingest_lag" {
  project         = var.project_id
  name            = "fs_ingest_lag_seconds"
  filter          = "resource.type=\"cloud_run_revision\" AND jsonPayload.${var.ingest_lag_field}:*"
  value_extractor = "EXTRACT(jsonPayload.${var.ingest_lag_field})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "CDC ingest lag"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.5
      scale              = 0.01
    }
  }
}

# Age of the online store's data as the last refresh left it (refresh_cache).
resource "google_logging_metric" "refresh_age" {
  project         = var.project_id
  name            = "fs_cache_refresh_age_seconds"
  filter          = "resource.type=\"cloud_run_revision\" AND jsonPayload.${var.refresh_age_field}:*"
  value_extractor = "EXTRACT(jsonPayload.${var.refresh_age_field})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "Cache refresh age"
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 40
      growth_factor      = 1.5
      scale              = 1
    }
  }
}

resource "google_monitoring_alert_policy" "read_latency_p95" {
  for_each = var.read_latency_p95_ms

  project               = var.project_id
  display_name          = "Feature store: ${each.key} P95 latency above ${each.value} ms"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels

  conditions {
    display_name = "P95 request latency of ${each.key} > ${each.value} ms for 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${var.services[each.key]}\" AND metric.type = \"run.googleapis.com/request_latencies\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
        group_by_fields      = ["resource.label.service_name"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "P95 latency of ${each.key} is above its target. Check the cache hit rate alert, Redis CPU and the `degraded` reads in the function's logs."
  }
}

resource "google_monitoring_alert_policy" "cache_hit_rate" {
  project               = var.project_id
  display_name          = "Feature store: cache hit rate below ${var.cache_hit_rate_min * 100}%"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Share of reads served from Redis < ${var.cache_hit_rate_min} over 10 minutes"

    condition_threshold {
      filter             = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.cache_lookups.name}\" AND metric.labels.cache_hit = \"true\""
      denominator_filter = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.cache_lookups.name}\""
      comparison         = "COMPARISON_LT"
      threshold_value    = var.cache_hit_rate_min
      duration           = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }

      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Fewer reads than expected find their vector in Redis: the refresh or ingest may be behind, or keys are being evicted (maxmemory)."
  }
}

resource "google_monitoring_alert_policy" "error_rate" {
  project               = var.project_id
  display_name          = "Feature store: 5xx rate above ${var.error_rate_max * 100}%"
  combiner              = "OR"
  severity              = "CRITICAL"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Share of 5xx responses > ${var.error_rate_max} for 5 minutes, per function"

    condition_threshold {
      filter             = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = one_of(${local.all_services}) AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\""
      denominator_filter = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = one_of(${local.all_services}) AND metric.type = \"run.googleapis.com/request_count\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.error_rate_max
      duration           = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }

      denominator_aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A function answers 5xx: transient faults (503 dependency_unavailable) or bugs (500 internal, traceback in the logs). Pub/Sub redelivers ingest 5xx until the dead-letter topic."
  }
}

resource "google_monitoring_alert_policy" "freshness" {
  project               = var.project_id
  display_name          = "Feature store: online data is stale"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "P95 CDC ingest lag > ${var.ingest_lag_max_s} s for 10 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.ingest_lag.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.ingest_lag_max_s
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
      }

      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "Cache refresh age > ${var.refresh_age_max_s} s"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.refresh_age.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.refresh_age_max_s
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
      }

      trigger {
        count = 1
      }
    }
  }

  # A refresh that stopped running reports no age at all.
  conditions {
    display_name = "No cache refresh reported for 30 minutes"

    condition_absent {
      filter   = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.refresh_age.name}\""
      duration = "1800s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_COUNT"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Online features lag the source of truth: check the cdc-changes subscription backlog and dead-letter topic, the refresh-cache-incremental scheduler job, and the CDC relay."
  }
}

# Rate limits are not enforced while Redis fails (fail open, docs/security.md): page someone.
resource "google_monitoring_alert_policy" "rate_limit_fail_open" {
  project               = var.project_id
  display_name          = "Feature store: reads served without rate limits"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.notification_channels

  conditions {
    display_name = "Reads served without asking the rate limiter > ${var.rate_limit_fail_open_max} in 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.rate_limit_fail_open.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.rate_limit_fail_open_max
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The read path cannot reach Redis and serves reads without per-client rate limits (fail open, docs/security.md). Check Memorystore and the `rate_limit_fail_open` lines of the read functions; set FS_AUTH_RATE_LIMIT_FAIL_OPEN=false to refuse such reads with 503 instead."
  }
}
