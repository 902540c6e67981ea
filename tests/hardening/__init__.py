"""Hardening tests: load, faults, memory, fuzzing and security of django-sent-otel."""
