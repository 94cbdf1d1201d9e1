output "alert_policies" {
  description = "Names of the alert policies."
  value = concat(
    [for p in google_monitoring_alert_policy.read_latency_p95 : p.name],
    [google_monitoring_alert_policy.cache_hit_rate.name, google_monitoring_alert_policy.error_rate.name,
    google_monitoring_alert_policy.freshness.name],
  )
}
