"""Celery task entry points, one module per kind of event. Each is thin: parse, call a service."""
