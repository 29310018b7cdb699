"""The HTTP front door (`litellm-credits serve`): provider webhooks, the web app's events and the
dashboard's reads, over the producer and the ledger's read functions. Nothing else imports it."""
