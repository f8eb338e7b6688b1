"""Data observability: per-sync measures, checks, alerts with webhooks, quarantine and the report
(``Workspace.monitor``; see docs/monitoring.md)."""
