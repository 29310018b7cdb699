"""Why a message could not be applied. Rejected messages go to dead letters and are not retried."""


class Rejected(Exception):
    """The event itself is unacceptable (bad field, unknown plan, bad signature...)."""


class NotYet(Exception):
    """The event depends on one not applied yet (a refund whose payment has not arrived: webhooks
    race, and a queue may hold the payment back). Retried with backoff like a transient fault;
    dead-lettered with this reason only after the last retry."""
