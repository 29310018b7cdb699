"""Balance alerts: threshold checks, then delivery to the Redis stream and the webhook."""
