"""A real Celery worker (``celery worker`` subprocess, threads pool, concurrency 2) against the broker.

Covers, end to end through the broker: ``delay``/``apply_async`` with results over the ``rpc://``
backend; more ETA tasks than the worker's prefetch window (Celery raises the channel's
``basic.qos`` for each, so the worker must keep consuming); an ``acks_late`` task whose worker
is SIGKILLed mid-task, redelivered (``redelivered`` set) to a new worker and completed exactly
once; ``autoretry_for`` with ``retry_backoff`` succeeding after two failures; a task rejected
with ``Reject(requeue=False)`` dead-lettered through the queue's ``x-dead-letter-exchange``;
``group`` (rpc backend) and ``chord`` (``file://`` backend, since ``rpc://`` has no chords);
remote control ``ping`` and ``revoke`` over the pidbox exchanges.

Every run uses its own app, task exchange, queues and control exchange (``celery_app.py``), so
concurrent runs and other tests do not interfere. The workers are started with
``--without-gossip --without-mingle --without-heartbeat`` and stopped at the end with the
remote-control ``shutdown`` command (SIGKILL if they have not exited within a bound). Every wait
is bounded: ``AsyncResult.get(timeout=...)``, remote-control timeouts, and polling of record
files or the worker's schedule against a deadline.
"""

import datetime
import os
import signal
import subprocess
import sys
import time

import pytest
from celery import chord, group
from celery.exceptions import TaskRevokedError
from kombu import Connection, Consumer, Exchange, Queue

import celery_app
from conftest import unique

pytestmark = pytest.mark.timeout(60)

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = 10.0  # seconds allowed for a task result or a worker to come up
STOP_WAIT = 10.0  # seconds a worker gets for a warm shutdown before it is SIGKILLed


def wait_until(condition, what, timeout=WAIT, interval=0.05):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling interval, not a synchronisation sleep


class CeleryRun:
    """One uniquely named Celery app (queues, exchanges, control exchange) and its workers."""

    def __init__(self, amqp_url, base_dir, backend="rpc://"):
        self.amqp_url = amqp_url
        self.name = unique("celery")
        self.names = celery_app.queue_names(self.name)
        self.records = os.path.join(base_dir, "records")
        self.logs = os.path.join(base_dir, "logs")
        os.makedirs(self.records, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        if backend == "file":
            results = os.path.join(base_dir, "results")
            os.makedirs(results, exist_ok=True)
            backend = f"file://{results}"
        self.backend = backend
        self.app = celery_app.make_app(amqp_url, self.name, backend, self.records)
        self.workers = []

    def task(self, name):
        return self.app.tasks[f"interop.{name}"]

    def records_of(self, tag):
        try:
            with open(os.path.join(self.records, tag), encoding="utf-8") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def start_worker(self, queues):
        worker = Worker(self, queues)
        self.workers.append(worker)
        worker.start()
        return worker

    def ping(self, hostname, timeout):
        return self.app.control.inspect(destination=[hostname], timeout=timeout).ping()

    def close(self):
        """Stop the workers, then delete every queue and exchange of the run (even if a stop failed)."""
        try:
            for worker in self.workers:
                worker.stop()
        finally:
            for worker in self.workers:
                worker.kill()  # a no-op unless a failed stop left it running
            self.app.close()
            self.delete_entities()

    def delete_entities(self):
        n = self.names
        with Connection(self.amqp_url, connect_timeout=5) as conn:
            for queue in (n["default"], n["reject"], n["kill"], n["dead"]):
                ch = conn.channel()
                ch.queue_delete(queue)
                ch.close()
            for exchange in (self.name, n["dlx"], f"{self.name}.pidbox", f"reply.{self.name}.pidbox", f"{self.name}.ev"):
                ch = conn.channel()
                ch.exchange_delete(exchange)
                ch.close()


class Worker:
    """A ``celery worker`` subprocess in its own process group."""

    def __init__(self, run, queues):
        self.run = run
        self.queues = queues
        self.hostname = f"{unique('worker')}@interop"
        self.log_path = os.path.join(run.logs, f"{self.hostname}.log")
        self.proc = None

    def start(self):
        env = dict(
            os.environ,
            AMQP_URL=self.run.amqp_url,
            INTEROP_CELERY_NAME=self.run.name,
            INTEROP_CELERY_BACKEND=self.run.backend,
            INTEROP_CELERY_RECORDS=self.run.records,
            PYTHONPATH=HERE,
        )
        cmd = [
            sys.executable, "-m", "celery", "-A", "celery_app", "worker",
            "--pool", "threads", "--concurrency", "2", "--prefetch-multiplier", "1",
            "--queues", ",".join(self.queues), "--hostname", self.hostname,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", os.environ.get("INTEROP_CELERY_LOGLEVEL", "INFO"),
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        # Ready once it answers a remote-control ping (its task consumers start before that).
        deadline = time.monotonic() + 20
        while not self.run.ping(self.hostname, timeout=0.5):
            if self.proc.poll() is not None:
                pytest.fail(f"celery worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                pytest.fail(f"celery worker {self.hostname} did not answer ping within 20 s:\n{self.log_tail()}")

    def log_tail(self, lines=40):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def kill(self):
        """SIGKILL the whole worker (no warm shutdown, no acks, the TCP connection just drops)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_WAIT)

    def stop(self):
        """Warm shutdown through the remote-control ``shutdown`` command; SIGKILL after a bound.

        (A SIGTERM is only noticed on the worker's next event-loop wake-up, up to 10 s later
        when idle; a control message wakes it at once.)
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        self.run.app.control.shutdown(destination=[self.hostname])
        try:
            self.proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_WAIT)
            pytest.fail(f"celery worker {self.hostname} ignored the shutdown command:\n{self.log_tail()}")


@pytest.fixture(scope="module")
def run(amqp_url, tmp_path_factory):
    """The shared app and one worker consuming the default queue and the dead-lettering queue."""
    r = CeleryRun(amqp_url, str(tmp_path_factory.mktemp("celery")))
    try:
        # The dead-letter exchange and queue are the application's own, not Celery's.
        with Connection(amqp_url, connect_timeout=5) as conn:
            dlx = Exchange(r.names["dlx"], type="direct", durable=False)
            Queue(r.names["dead"], dlx, routing_key=r.names["dead"], durable=False)(conn.default_channel).declare()
        r.worker = r.start_worker([r.names["default"], r.names["reject"]])
        yield r
    finally:
        r.close()


def message_count(amqp_url, queue):
    with Connection(amqp_url, connect_timeout=5) as conn:
        _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
        return count


def test_delay_and_apply_async_return_results(run):
    add = run.task("add")
    assert add.delay(2, 3).get(timeout=WAIT) == 5

    task_id = f"interop-{unique('id')}"
    result = add.apply_async(kwargs={"x": 40, "y": 2}, task_id=task_id)
    assert result.id == task_id
    assert result.get(timeout=WAIT) == 42
    assert result.successful()
    assert result.state == "SUCCESS"

    # Several in flight at once, results matched by correlation id.
    results = [add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=WAIT) for r in results] == [2 * i for i in range(10)]


def test_eta_tasks_beyond_prefetch_window_all_complete(run):
    """Seven ETA tasks against a prefetch window of 2 (concurrency 2 x multiplier 1): the worker
    keeps each one unacked until it is due and raises the channel's ``basic.qos`` (global) by
    one for each, so it must receive all seven before they are due, still run tasks that are due
    now, and finally run every ETA task once, not before its ETA."""
    stamp, add = run.task("stamp"), run.task("add")
    hostname = run.worker.hostname
    tag = unique("eta")
    eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=4)
    delayed = [stamp.apply_async((tag, n), eta=eta) for n in range(6)]
    delayed.append(stamp.apply_async((tag, 6), countdown=4))
    ids = {r.id for r in delayed}

    # Poll the worker's schedule over remote control until it holds all seven. (Each poll also
    # wakes the worker's event loop, which is where Celery sends its raised basic.qos; an idle
    # worker may otherwise only send it at its next timer tick, a client-side delay.)
    def scheduled_ids():
        replies = run.app.control.inspect(destination=[hostname], timeout=1).scheduled() or {}
        return {entry["request"]["id"] for entry in replies.get(hostname, [])}

    wait_until(lambda: scheduled_ids() == ids, "the worker to hold all 7 ETA tasks", interval=0.1)
    assert time.time() < eta.timestamp(), "the ETA tasks only arrived once they were due"

    # Published after the ETA tasks, but due now: the unacked ETA tasks must not block them.
    assert [add.delay(n, 1).get(timeout=WAIT) for n in range(3)] == [1, 2, 3]
    assert time.time() < eta.timestamp(), "immediate tasks were only run once the ETA tasks were due"
    assert run.records_of(tag) == []

    outcomes = [r.get(timeout=WAIT) for r in delayed]
    assert sorted(o["n"] for o in outcomes) == list(range(7))
    for o in outcomes:
        assert o["ran_at"] >= eta.timestamp() - 0.1, "ETA task ran before its ETA"
    assert sorted(run.records_of(tag)) == [f"ran {n}" for n in range(7)]


@pytest.mark.timeout(90)
def test_acks_late_task_redelivered_after_worker_sigkill_completes_once(run):
    """The worker dies mid-task (SIGKILL): the broker requeues the unacked message with
    ``redelivered`` set, a new worker runs it to completion, and it is acked exactly once."""
    task = run.task("block_until_redelivered")
    tag = unique("kill")
    first = run.start_worker([run.names["kill"]])
    result = task.apply_async((tag,), queue=run.names["kill"])

    wait_until(lambda: run.records_of(tag) == ["start redelivered=False"], "the task to start")
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL

    second = run.start_worker([run.names["kill"]])
    assert result.get(timeout=WAIT) == "completed after redelivery"
    second.stop()  # warm shutdown: nothing left in flight

    assert run.records_of(tag) == ["start redelivered=False", "start redelivered=True", "done"]
    assert message_count(run.amqp_url, run.names["kill"]) == 0  # acked, not requeued again


def test_autoretry_with_backoff_succeeds_after_failures(run):
    flaky = run.task("flaky")
    tag = unique("retry")
    result = flaky.delay(tag, 2)
    assert result.get(timeout=WAIT) == 2  # self.request.retries on the successful attempt
    assert run.records_of(tag) == ["attempt 0", "attempt 1", "attempt 2"]


def test_rejected_task_is_dead_lettered(run):
    reject = run.task("reject")
    tag = unique("reject")
    result = reject.apply_async((tag,), queue=run.names["reject"])

    got = []
    with Connection(run.amqp_url, connect_timeout=5) as conn:
        dead = Queue(run.names["dead"], no_declare=True)
        with Consumer(conn, [dead], callbacks=[lambda body, msg: (got.append(msg), msg.ack())], accept=["json"]):
            deadline = time.monotonic() + WAIT
            while not got:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("timed out waiting for the dead-lettered task message")
                try:
                    conn.drain_events(timeout=min(left, 0.5))
                except TimeoutError:
                    pass

    msg = got[0]
    headers = msg.headers
    assert headers["task"] == "interop.reject"
    assert headers["id"] == result.id
    assert msg.delivery_info["exchange"] == run.names["dlx"]
    assert msg.delivery_info["routing_key"] == run.names["dead"]
    [death] = headers["x-death"]
    assert death["reason"] == "rejected"
    assert death["queue"] == run.names["reject"]
    assert death["exchange"] == ""  # Celery publishes to direct-exchange queues via the default exchange
    assert death["routing-keys"] == [run.names["reject"]]
    assert death["count"] == 1
    assert run.records_of(tag) == ["rejected"]  # ran once, not requeued
    assert message_count(run.amqp_url, run.names["reject"]) == 0


def test_group_results(run):
    add = run.task("add")
    result = group(add.s(i, i) for i in range(8)).apply_async()
    assert result.get(timeout=WAIT) == [2 * i for i in range(8)]
    assert result.successful()


def test_chord_with_file_backend(amqp_url, tmp_path):
    """``rpc://`` cannot do chords, so this app stores results in files; Celery then joins the
    header with its ``celery.chord_unlock`` task, which re-publishes itself with a countdown
    until every header task is done."""
    r = CeleryRun(amqp_url, str(tmp_path), backend="file")
    try:
        r.start_worker([r.names["default"]])
        add, total = r.task("add"), r.task("total")
        result = chord(add.s(i, i) for i in range(5))(total.s())
        assert result.get(timeout=WAIT) == 20
    finally:
        r.close()


def test_remote_control_ping(run):
    assert run.ping(run.worker.hostname, timeout=5) == {run.worker.hostname: {"ok": "pong"}}
    # A broadcast ping over the run's own control exchange reaches exactly this worker.
    replies = run.app.control.ping(timeout=1)
    assert replies == [{run.worker.hostname: {"ok": "pong"}}]


def test_revoke_prevents_countdown_task(run):
    stamp = run.task("stamp")
    tag = unique("revoke")
    result = stamp.apply_async((tag, 0), countdown=3)
    replies = run.app.control.revoke(result.id, reply=True, timeout=5, destination=[run.worker.hostname])
    assert replies == [{run.worker.hostname: {"ok": f"tasks {{'{result.id}'}} flagged as revoked"}}]

    with pytest.raises(TaskRevokedError):
        result.get(timeout=WAIT)
    assert result.state == "REVOKED"
    assert run.records_of(tag) == []  # never executed

    # The worker carries on with other work.
    assert run.task("add").delay(1, 1).get(timeout=WAIT) == 2
