"""Serving: the HTTP server, worker processes, configuration reload, health checks and metrics."""
