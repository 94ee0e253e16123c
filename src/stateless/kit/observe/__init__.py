"""What operators see: redacted structured logs, Prometheus series, event-loop lag."""
