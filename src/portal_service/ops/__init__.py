"""Health, readiness, metrics, logging and request ids."""
