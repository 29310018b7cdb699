"""The credit worker: Celery app, settings, database, ledger and proxy client."""
