"""Metrics, the /metrics endpoint, and the Prometheus/Grafana files operators deploy."""
