"""What the gateway reports: the access log, the audit trail, Prometheus metrics, and the admin
listener that serves health and metrics."""
