"""Metrics, health endpoints and logs."""
