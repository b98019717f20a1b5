"""Celery app and tasks for the Celery worker interop tests (``test_celery.py``).

One module serves both sides: the test process builds its app with ``make_app(...)`` and the
``celery worker`` subprocess loads ``celery_app:app``, which calls ``make_app`` with the same
parameters taken from the environment:

- ``AMQP_URL``: the broker.
- ``INTEROP_CELERY_NAME``: a name unique to this run. It names the app, the task exchange and
  every queue, and the control (pidbox) exchange, so that concurrent runs never see each other's
  tasks or workers.
- ``INTEROP_CELERY_BACKEND``: the result backend (``rpc://`` unless a test needs chords).
- ``INTEROP_CELERY_RECORDS``: a directory where tasks append one line per execution, so that
  tests can count executions across worker processes.

Queues (all bound to the direct exchange ``NAME``, routing key = queue name; Celery itself
publishes tasks for direct-exchange queues through the default exchange ``""`` with the queue
name as routing key):

- ``NAME``: the default queue, consumed by the shared worker.
- ``NAME.reject``: declared with ``x-dead-letter-exchange: NAME.dlx`` and
  ``x-dead-letter-routing-key: NAME.dead``; a task rejected there with ``requeue=False`` is
  dead-lettered to the queue ``NAME.dead`` (declared by the test, not by Celery).
- ``NAME.kill``: consumed only by the workers of the worker-kill test.
"""

import os
import time

from celery import Celery
from celery.exceptions import Reject
from kombu import Exchange, Queue

BLOCK_SECONDS = 30.0  # bound on how long ``block_until_redelivered`` blocks a first delivery


def queue_names(name):
    return {
        "default": name,
        "reject": f"{name}.reject",
        "kill": f"{name}.kill",
        "dlx": f"{name}.dlx",
        "dead": f"{name}.dead",
    }


def make_app(broker_url, name, backend, records):
    names = queue_names(name)
    tasks_exchange = Exchange(name, type="direct")
    app = Celery(name, broker=broker_url, backend=backend, set_as_current=False)
    app.conf.update(
        task_queues=[
            Queue(names["default"], tasks_exchange, routing_key=names["default"]),
            Queue(
                names["reject"],
                tasks_exchange,
                routing_key=names["reject"],
                queue_arguments={
                    "x-dead-letter-exchange": names["dlx"],
                    "x-dead-letter-routing-key": names["dead"],
                },
            ),
            Queue(names["kill"], tasks_exchange, routing_key=names["kill"]),
        ],
        task_default_queue=names["default"],
        task_default_exchange=name,
        task_default_routing_key=names["default"],
        control_exchange=name,  # pidbox exchanges NAME.pidbox and reply.NAME.pidbox
        event_exchange=f"{name}.ev",
        worker_prefetch_multiplier=1,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        result_chord_retry_interval=0.5,  # chord_unlock polling (file:// backend only)
        # x-expires (ms) of rpc:// result queues. A worker declares its own result queue when a
        # revoke makes it look up a task state; nothing ever consumes from it, so auto-delete
        # never fires, and this expiry is what removes it after the run (default: one day).
        result_expires=60,
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        timezone="UTC",
    )
    register_tasks(app, records)
    return app


def record(records, tag, line):
    """Append one line to the record file ``tag`` (one file per test, so no interleaving)."""
    with open(os.path.join(records, tag), "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class Flaky(Exception):
    """Raised by ``flaky`` until it has failed often enough."""


def register_tasks(app, records):
    @app.task(shared=False, name="interop.add")
    def add(x, y):
        return x + y

    @app.task(shared=False, name="interop.total")
    def total(values):
        return sum(values)

    @app.task(shared=False, name="interop.stamp")
    def stamp(tag, n):
        """Record an execution and return when it ran (epoch seconds)."""
        record(records, tag, f"ran {n}")
        return {"n": n, "ran_at": time.time()}

    @app.task(shared=False, name="interop.block_until_redelivered", bind=True, acks_late=True)
    def block_until_redelivered(self, tag):
        """First delivery: record 'start' and block (the test kills the worker meanwhile).

        A redelivery (``redelivered`` set by the broker) records 'start', then 'done', and
        returns. With ``acks_late`` the message is only acked once this returns.
        """
        redelivered = bool(self.request.delivery_info.get("redelivered"))
        record(records, tag, f"start redelivered={redelivered}")
        if not redelivered:
            deadline = time.monotonic() + BLOCK_SECONDS
            while time.monotonic() < deadline:  # bounded; the worker is SIGKILLed long before
                time.sleep(0.1)
            raise RuntimeError("worker was not killed while the task was running")
        record(records, tag, "done")
        return "completed after redelivery"

    @app.task(
        shared=False,  # each app (one per run) gets its own task objects
        name="interop.flaky",
        bind=True,
        autoretry_for=(Flaky,),
        retry_backoff=1,
        retry_backoff_max=1,
        retry_jitter=False,
        max_retries=5,
    )
    def flaky(self, tag, failures):
        """Fail ``failures`` times (each retry is re-published with a 1 s countdown), then succeed."""
        record(records, tag, f"attempt {self.request.retries}")
        if self.request.retries < failures:
            raise Flaky(f"failure {self.request.retries + 1} of {failures}")
        return self.request.retries

    @app.task(shared=False, name="interop.reject", bind=True, acks_late=True)
    def reject(self, tag):
        """Reject the message without requeueing it (basic.reject requeue=false)."""
        record(records, tag, "rejected")
        raise Reject("rejected by interop test", requeue=False)

    return app


# The worker subprocess: `celery -A celery_app worker ...` loads this.
if os.environ.get("INTEROP_CELERY_NAME"):
    app = make_app(
        os.environ["AMQP_URL"],
        os.environ["INTEROP_CELERY_NAME"],
        os.environ.get("INTEROP_CELERY_BACKEND", "rpc://"),
        os.environ["INTEROP_CELERY_RECORDS"],
    )
