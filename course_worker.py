"""A background worker for real: Celery, with the course's Redis (``broker.py``) as its broker,
and two tasks that read the seed's first person, one through Django, one through SQLAlchemy
(chapter 09).

    with course_worker.running(fix="signals", wait_timeout=1) as worker:
        worker.call("django_first_person", "default")    # {"connection_id": ..., "firstname": "John"}

``fix`` (the worker's ``COURSE_WORKER_FIX``) is what guards its connections between tasks:

- ``none``: nothing. Django is set up by this module after the Celery app is made, so Celery's
  Django fixup is not installed (as in a worker that sets Django up by hand), and SQLAlchemy's
  engine has a plain pool: a connection idle past ``wait_timeout`` is met by the next task;
- ``signals``: the fix passed around: ``close_old_connections()`` in ``task_prerun`` and
  ``task_postrun``; SQLAlchemy with ``pool_pre_ping``;
- ``fixup``: ``DJANGO_SETTINGS_MODULE`` set before the Celery app is made, as Celery's docs do:
  its Django fixup then closes every Django connection before and after each task; SQLAlchemy
  with ``pool_pre_ping``.

``wait_timeout`` (``COURSE_WAIT_TIMEOUT``) gives the worker's connections that ``wait_timeout``:
a quiet night in a second. The worker runs one task at a time (``--pool solo``) in a process of
its own, started and stopped by ``running()``.
"""
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Celery, signals

import broker
import config
from strategies import TIMEOUTS

FIX = os.environ.get("COURSE_WORKER_FIX", "none")
FIXES = ("none", "signals", "fixup")

if FIX == "fixup":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "course_django.settings")  # before the app: the fixup is installed
app = Celery("course_worker", broker=broker.course().url, backend=broker.course().url)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False, task_track_started=False)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "course_django.settings")
import django  # noqa: E402

django.setup()
from django.db import close_old_connections  # noqa: E402
from django.db.models.expressions import RawSQL  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from course_django.models import Person  # noqa: E402

if FIX == "signals":
    signals.task_prerun.connect(lambda **_: close_old_connections(), weak=False)
    signals.task_postrun.connect(lambda **_: close_old_connections(), weak=False)

_connect_args = dict(TIMEOUTS)
if os.environ.get("COURSE_WAIT_TIMEOUT"):
    _connect_args["init_command"] = f"SET SESSION wait_timeout = {int(os.environ['COURSE_WAIT_TIMEOUT'])}"
engine = create_engine(config.sql_url(), pool_pre_ping=FIX != "none", connect_args=_connect_args)


@app.task
def django_first_person(alias="default"):
    person = Person.objects.using(alias).annotate(connection_id=RawSQL("CONNECTION_ID()", ())).order_by("id").first()
    return {"connection_id": person.connection_id, "firstname": person.firstname}


@app.task
def sqlalchemy_first_person():
    with engine.connect() as connection:
        row = connection.execute(text("SELECT CONNECTION_ID(), firstname FROM person ORDER BY id LIMIT 1")).one()
    return {"connection_id": row[0], "firstname": row[1]}


@dataclass
class Worker:
    """A running worker process, and where its log goes."""

    process: subprocess.Popen
    log: Path

    def call(self, task, *args, timeout=30):
        """Run ``task`` on the worker and wait for it: what it returned, or ``"failed: <error> <code>"``."""
        result = app.send_task(f"course_worker.{task}", args=args)
        try:
            return result.get(timeout=timeout)
        except Exception as error:  # the task's own error, rebuilt from the result backend
            return f"failed: {_described(error)}"
        finally:
            result.forget()


def _described(error):
    """``OperationalError 2006``: the class and code of a task's error. Celery rebuilds an error
    whose class it cannot import here (SQLAlchemy's) as a plain ``Exception`` naming it."""
    text = str(error)
    named = re.search(r"<class '(?:\w+\.)*(\w+)'>", text)
    code = re.search(r"\((\d{4}), ", text)
    return f"{named.group(1) if named else type(error).__name__} {code.group(1) if code else text[:80]}"


@contextmanager
def running(fix="none", wait_timeout=None):
    """Start a worker with ``fix`` (``FIXES``), its connections' ``wait_timeout`` shortened when
    given; stop it when the block ends. The broker is started if it is not running, and left
    running: this process's Celery client keeps its connections to it (``broker.stop()`` when done)."""
    if fix not in FIXES:
        raise ValueError(f"fix must be one of {FIXES}, not {fix!r}")
    broker.start()
    log = broker.course().home / f"worker-{fix}.log"
    env = {**os.environ, "COURSE_WORKER_FIX": fix}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the worker decides, by its fix
    if wait_timeout is not None:
        env["COURSE_WAIT_TIMEOUT"] = str(wait_timeout)
    command = [sys.executable, "-m", "celery", "-A", "course_worker", "worker", "--pool", "solo", "--loglevel",
               "WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle", "-n", f"course-{fix}@%h"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                   cwd=Path(__file__).resolve().parent, start_new_session=True)
    worker = Worker(process, log)
    try:
        _wait_until_ready(worker)
        yield worker
    finally:
        process.send_signal(signal.SIGTERM)  # a warm shutdown: the task at hand ends first
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(worker, timeout=30):
    deadline = time.monotonic() + timeout
    while not app.control.ping(timeout=0.5):
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start: see {worker.log}\n{worker.log.read_text()[-2000:]}")
