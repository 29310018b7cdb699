"""The Celery app (`celery -A worker.app worker|beat`): broker, queues, reliability settings, beat."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery, signals
from kombu import Exchange, Queue

from schemas.routes import QUEUES, ROUTES
from worker import db, proxy
from worker.logs import configure
from worker.settings import get_settings

# Named, not imported: each module registers its tasks on `app` when the worker loads it, and
# nothing here depends on the task code.
log = logging.getLogger(__name__)
TASK_MODULES = ["tasks.signup", "tasks.payment", "tasks.credit_tools", "tasks.spend", "tasks.reconcile",
                "tasks.expiry", "tasks.alerts"]


def make_app() -> Celery:
    s = get_settings()
    app = Celery("litellm_credits", include=TASK_MODULES)
    app.conf.update(
        broker_url=s.redis_url,
        # Our Redis transport dead-letters garbage instead of letting it crash the consumer.
        broker_transport="worker.delivery.broker:Transport",
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Unacked messages of a dead worker come back once its heartbeat stops; any unacked
        # message after the visibility timeout, the last resort: every retry countdown stays far
        # below it, or a waiting retry would be handed out a second time.
        broker_transport_options={
            "visibility_timeout": s.broker_visibility_timeout_s,
            # Each sweep refreshes the worker's heartbeat, then gives back what workers whose
            # heartbeat stopped held (worker.delivery.reservations), then what is older than the
            # visibility timeout; kombu's default sweep is every ~100 s.
            "unacked_restore_interval": max(1, min(10, s.broker_visibility_timeout_s // 4,
                                                   s.broker_heartbeat_s // 5)),
            "unacked_restore_throttle": 1,
        },
        # Each queue on its own direct exchange, so a restored message goes back to one queue only.
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
        task_default_queue="payments",
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
        # At-least-once: ack after the work, give the message back if the worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # Enough unacked messages in hand for one batch in the pool and the next one forming
        # (worker.delivery.batching); each is still acked only after its own work.
        worker_prefetch_multiplier=2 * s.event_batch_size,
        task_ignore_result=True,
        result_backend=None,
        # Flower: worker and sent events; arguments shown are the event JSON, never a key.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
        worker_consumer="worker.delivery.consumer:Consumer",
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule={
            "spend-sync": {
                "task": "spend.sync",
                "schedule": timedelta(seconds=s.spend_sync_interval_s),
                "options": {"queue": ROUTES["spend.sync"], "expires": s.spend_sync_interval_s},
            },
            "spend-retention": {
                "task": "spend.retention",
                "schedule": timedelta(minutes=10),
                "options": {"queue": ROUTES["spend.retention"], "expires": 600},
            },
            "reconcile": {
                "task": "ops.reconcile",
                "schedule": timedelta(seconds=s.reconcile_interval_s),
                "options": {"queue": ROUTES["ops.reconcile"], "expires": s.reconcile_interval_s},
            },
            "credit-expiry": {
                "task": "ops.expire_credit",
                "schedule": timedelta(seconds=s.credit_expiry_interval_s),
                "options": {"queue": ROUTES["ops.expire_credit"], "expires": s.credit_expiry_interval_s},
            },
        },
        timezone="UTC",
    )
    return app


app = make_app()


@signals.setup_logging.connect
def _logging(**_: object) -> None:
    configure()


@signals.worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # A forked pool child must not reuse its parent's database or HTTP sockets.
    db.dispose_engine()
    proxy.reset_client()


@signals.celeryd_init.connect
def _before_pool(instance: object = None, **_: object) -> None:
    # Main process, before the pool forks. JSON logs: no banner, and logging set up before
    # Celery's start-up warnings. Metrics: the multiprocess directory must be set before any
    # child can observe a proxy request.
    s = get_settings()
    # One line and exit 2, before any task is taken, when the worker could only fail: a secret
    # it needs missing, signing off without ALLOW_UNSIGNED_EVENTS, the database unreachable or
    # unmigrated, the master key refused (`run` has checked already).
    from worker.preflight import startup

    startup.require()
    if s.log_format == "json" and instance is not None:
        instance.quiet = True
        configure()
    if s.metrics_port:
        from worker import metrics

        metrics.prepare()
        if metrics.observe not in proxy.observers:
            proxy.observers.append(metrics.observe)


@signals.worker_ready.connect
def _serve_metrics(**_: object) -> None:
    # Started once the pool is up, so no child is forked while the server thread runs.
    if get_settings().metrics_port:
        from worker import metrics

        metrics.serve(get_settings().metrics_port)


@signals.worker_ready.connect
def _say_signing(**_: object) -> None:
    # Once per worker: whether a producer's queue alone can credit money is worth one line.
    # Running unsigned (ALLOW_UNSIGNED_EVENTS=true) is among the start-up warnings.
    from worker.preflight import startup

    for warning in startup.warnings:
        log.warning("%s", warning)
    s = get_settings()
    if s.event_signing_secret is not None:
        signups = "required" if s.signups_must_be_signed else "checked when present (SIGNUPS_MUST_BE_SIGNED off)"
        log.info("event signing is on: payment, refund and adjustment signatures required, signup signatures %s",
                 signups)
