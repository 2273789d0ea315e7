"""Observability: application log, and later metrics, access log and tracing (SPEC §9)."""
