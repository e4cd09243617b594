"""The reader's framework on the scoreboard: SQLAlchemy's and Django's configurations, shaped like
the course's strategies (``strategies.Strategy``), so that ``bench/chaos.py`` and
``bench/overhead.py`` run them beside the course's own, on the same requests and faults.

Each is built, as a strategy is, from a peewee database of the course's settings (whose host,
port and timeouts it takes: the chaos run's relay), and hands each request a ``FrameworkDB``:
``execute_sql()``, ``atomic()`` and the few other calls the chaos app makes, on the framework's
own connection. What decides what survives is the framework's own code, as shipped:

- SQLAlchemy 2.x: a pooled engine (``QueuePool``), ``NullPool`` (a connection per request),
  ``pool_pre_ping``, ``pool_recycle``, and ``sqlalchemy_rule`` (the course's rule through its
  events, with pre-ping). A request is ``engine.connect()``, its statements ``exec_driver_sql()``.
  The driver runs in autocommit (``isolation_level="AUTOCOMMIT"``), as the course's app and Django
  run it, so that each kind of request means the same in every row: a transaction is
  ``START TRANSACTION`` ... ``COMMIT``, sent through SQLAlchemy's connection.
- Django 5.2: an alias per setting (``course_django/settings.py``); a request is what Django's WSGI
  handler does around a view: the ``request_started`` signal, the view (inside
  ``transaction.atomic()`` with ``ATOMIC_REQUESTS``), the ``request_finished`` signal; both
  signals run ``close_old_connections()``. Its statements go through ``connection.cursor()``.

Django is imported only when a Django row is built: a learner without chapter 09's packages
(``requirements-frameworks.txt``) can still run the course's own rows.
"""
import itertools
import os
import threading
from contextlib import contextmanager

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.pool import NullPool

import config
import sqlalchemy_rule
import strategies as S


def _timeouts(db):
    return {name: db.connect_params[name] for name in S.TIMEOUTS if db.connect_params.get(name)}


def _bound(timeouts, statements=1):
    """The longest a request waits on connections: ``statements`` answers never coming, one connect."""
    if len(timeouts) < len(S.TIMEOUTS):
        return None
    return statements * max(timeouts["read_timeout"], timeouts["write_timeout"]) + timeouts["connect_timeout"]


class FrameworkDB:
    """What the chaos app calls on a request's database, over a framework's connection."""

    def execute_sql(self, sql, params=None):
        raise NotImplementedError

    def connection(self):
        """The driver's connection (a ``MySQLdb`` one), connecting first if there is none."""
        raise NotImplementedError

    def is_closed(self):
        raise NotImplementedError

    def connect(self):
        self.connection()


class SQLAlchemyDB(FrameworkDB):
    def __init__(self, conn, rule):
        self.conn, self.rule = conn, rule

    def execute_sql(self, sql, params=None):
        if self.rule:
            return sqlalchemy_rule.execute(self.conn, sql, params)
        return self.conn.exec_driver_sql(sql, params)

    @contextmanager
    def atomic(self):
        self.execute_sql("START TRANSACTION")
        try:
            yield
        except BaseException:
            if not self.conn.invalidated:
                try:
                    self.conn.exec_driver_sql("ROLLBACK")
                except sqlalchemy.exc.DBAPIError:
                    pass  # the connection is gone: the server rolled back already
            raise
        self.execute_sql("COMMIT")

    def connection(self):
        if self.conn.invalidated:
            self.conn.rollback()  # what SQLAlchemy asks before it reconnects
        return self.conn.connection.dbapi_connection

    def is_closed(self):
        return self.conn.closed or self.conn.invalidated


class SQLAlchemyStrategy:
    """A SQLAlchemy engine with ``options``, and ``rule``: the course's, through its events."""

    name, options, rule = "sqlalchemy", {}, False
    database_class = None  # what the chaos run builds its peewee database with: the course's

    def __init__(self, db):
        self.timeouts = _timeouts(db)
        url = sqlalchemy.engine.make_url(config.sql_url()).set(host=db.connect_params["host"],
                                                              port=db.connect_params["port"])
        self.engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=self.timeouts,
                                               **self.options)
        if self.rule:
            sqlalchemy_rule.install(self.engine, self.timeouts.get("read_timeout"))
        self.opened, self.lock = [], threading.Lock()
        event.listen(self.engine, "connect", self._opened)

    def _opened(self, dbapi_connection, record):
        with self.lock:
            self.opened = [conn for conn in self.opened if conn.open] + [dbapi_connection]

    @contextmanager
    def request(self):
        with self.engine.connect() as conn:
            yield SQLAlchemyDB(conn, self.rule)

    def connection_ids(self):
        """The server ids of the driver connections the engine holds open."""
        with self.lock:
            return [conn.thread_id() for conn in self.opened if conn.open]

    def longest_wait(self):
        return _bound(self.timeouts, statements=2 if self.rule else 1)  # the rule runs a statement again once

    def close(self):
        self.engine.dispose()


def _sqlalchemy(name, doc, rule=False, **options):
    return type(name, (SQLAlchemyStrategy,), {"name": name, "options": options, "rule": rule, "__doc__": doc})


SQLALCHEMY = [
    _sqlalchemy("sqlalchemy_pool", "SQLAlchemy as shipped: a pool (QueuePool) of connections kept for ever."),
    _sqlalchemy("sqlalchemy_null_pool", "NullPool: a connection per request (chapter 02).", poolclass=NullPool),
    _sqlalchemy("sqlalchemy_pre_ping", "pool_pre_ping: a ping at each checkout (chapter 03).", pool_pre_ping=True),
    _sqlalchemy("sqlalchemy_recycle", "pool_recycle: retired after 180 s (the course's max_age), at a checkout.",
                pool_recycle=S.MAX_AGE),
    _sqlalchemy("sqlalchemy_rule", "pre-ping and the course's rule through handle_error (sqlalchemy_rule.py).",
                rule=True, pool_pre_ping=True),
]


class DjangoDB(FrameworkDB):
    def __init__(self, alias):
        from django.db import connections

        self.wrapper, self.alias = connections[alias], alias

    def execute_sql(self, sql, params=None):
        cursor = self.wrapper.cursor()  # a health check, when enabled, runs here: once per request
        cursor.execute(sql, params)
        return cursor

    def atomic(self):
        from django.db import transaction

        return transaction.atomic(using=self.alias)

    def connection(self):
        self.wrapper.ensure_connection()
        return self.wrapper.connection

    def is_closed(self):
        return self.wrapper.connection is None


_aliases = itertools.count(1)


class DjangoStrategy:
    """A Django database alias with ``settings`` (``course_django.settings.SETTINGS[setting]``)."""

    name, setting = "django", "default"
    database_class = None

    def __init__(self, db):
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "course_django.settings")
        import django
        from django.db import connections
        from django.db.backends.signals import connection_created

        from course_django import settings

        django.setup()
        self.timeouts = _timeouts(db)
        self.alias = f"{self.name}_{next(_aliases)}"  # an alias of its own: its port is the run's relay
        database = {**settings.DATABASES[self.setting], "HOST": db.connect_params["host"],
                    "PORT": str(db.connect_params["port"]), "OPTIONS": dict(self.timeouts)}
        filled = connections.configure_settings({"default": dict(database), self.alias: database})  # Django's defaults
        connections.settings[self.alias] = filled[self.alias]
        self.atomic_requests = database.get("ATOMIC_REQUESTS", False)
        self.wrappers, self.lock = [], threading.Lock()
        connection_created.connect(self._created, weak=False, dispatch_uid=self.alias)

    def _created(self, sender, connection, **kwargs):
        if connection.alias == self.alias:
            with self.lock:
                self.wrappers.append(connection)

    @contextmanager
    def request(self):
        """What Django's WSGI handler does around a view."""
        from django.core import signals
        from django.db import transaction

        signals.request_started.send(sender=self.__class__)
        try:
            if self.atomic_requests:
                with transaction.atomic(using=self.alias):
                    yield DjangoDB(self.alias)
            else:
                yield DjangoDB(self.alias)
        finally:
            signals.request_finished.send(sender=self.__class__)

    def connection_ids(self):
        with self.lock:
            return [wrapper.connection.thread_id() for wrapper in self.wrappers if wrapper.connection is not None]

    def longest_wait(self):
        return _bound(self.timeouts)  # a health check's ping, or the statement, and one connect

    def close(self):
        from django.db import connections
        from django.db.backends.signals import connection_created

        connection_created.disconnect(dispatch_uid=self.alias)
        with self.lock:
            for wrapper in self.wrappers:  # each thread's: closed from here, below Django's thread check
                if wrapper.connection is not None:
                    wrapper.connection.close()
                    wrapper.connection = None
        del connections.settings[self.alias]


def _django(name, setting, doc):
    return type(name, (DjangoStrategy,), {"name": name, "setting": setting, "__doc__": doc})


DJANGO = [
    _django("django_default", "default", "Django as shipped: CONN_MAX_AGE = 0, a connection per request."),
    _django("django_persistent", "persistent", "CONN_MAX_AGE = 600: kept ten minutes, checked by nobody."),
    _django("django_health_checks", "health_checks", "CONN_MAX_AGE = 600 with CONN_HEALTH_CHECKS."),
    _django("django_atomic_requests", "atomic_requests", "health checks, and ATOMIC_REQUESTS: a view, a transaction."),
]
STRATEGIES = {cls.name: cls for cls in SQLALCHEMY + DJANGO}
NAMES = list(STRATEGIES)
# bench/overhead.py has SQLAlchemy's pool and pre-ping as reference rows already (in the driver's default mode)
OVERHEAD_NAMES = [name for name in NAMES if name not in ("sqlalchemy_pool", "sqlalchemy_pre_ping")]


def contenders(port=None):
    """The rows ``bench/overhead.py`` adds for the frameworks: each built like a strategy."""
    return [STRATEGIES[name](S.database(port=port)) for name in OVERHEAD_NAMES]
