"""Ready integrations of the events and statistics: Prometheus and OpenTelemetry (optional
extras; their packages are imported only when asked for)."""
