"""Observability: what the pipeline tells its operators (the monitor; metrics and logs)."""
