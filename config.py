"""Connection settings for the course, as in the seed tutorial's ``config.py``.

Each setting is read from an environment variable of the same name. The
defaults match the local MariaDB server that ``make lab`` and ``make test``
start (see ``localdb.py``); its password is a documented, local-only default,
not a secret.

To use a MySQL or MariaDB server of your own, set ``DB_HOST`` (and whichever
others differ) before starting JupyterLab. Then the local server is left alone,
and the demos that would restart it cut your own connections instead (see ``faults.py``).
"""
import os

from connections import MySQLdbDatabase


#: The local server's password: documented in the README, reachable only on 127.0.0.1.
LOCAL_PASSWORD = "simplerr-local"
LOCAL_PORT = 13306


def _text(name, default):
    """The environment variable ``name``, or ``default``; an empty value is an error."""
    value = os.environ.get(name, default)
    if not value.strip():
        raise ValueError(f"{name} is set but empty: unset it to use the default {default!r}, or give it a value")
    return value


def _port(name, default):
    """The environment variable ``name`` as a TCP port number."""
    value = _text(name, str(default))
    if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{name} must be a port number from 1 to 65535, not {value!r}")
    return int(value)


DB_SCHM = _text("DB_SCHM", "simplerr_schema")
DB_USER = _text("DB_USER", "simplerr")
DB_PASS = _text("DB_PASS", LOCAL_PASSWORD)
DB_HOST = _text("DB_HOST", "127.0.0.1")
DB_PORT = _port("DB_PORT", LOCAL_PORT)

#: True unless DB_HOST names a server of the user's own: only then may the course start,
#: stop or restart the server.
LOCAL_SERVER = "DB_HOST" not in os.environ

# The seed's module-level database (a plain peewee database, on mysqlclient whatever else is installed)
DATABASE = MySQLdbDatabase(DB_SCHM, user=DB_USER, password=DB_PASS, host=DB_HOST, port=DB_PORT)


def connect_kwargs():
    """Keyword arguments for ``MySQLdb.connect`` with the same settings as ``DATABASE``."""
    return dict(host=DB_HOST, port=DB_PORT, user=DB_USER, password=DB_PASS, database=DB_SCHM)


def sql_url(port=None):
    """A SQLAlchemy URL for ``%sql`` (it holds the password: pass it, never print it); ``port``
    for another server on the same host (a node of chapter 08's pair)."""
    from sqlalchemy.engine import URL

    url = URL.create("mysql+mysqldb", DB_USER, DB_PASS, DB_HOST, port or DB_PORT, DB_SCHM)
    return url.render_as_string(hide_password=False)


def forget_sql_connections():
    """Let go of every connection ``%sql`` holds, without a word to the server: call it before
    ``%sql {config.sql_url()}``, so that a chapter run again in the same kernel starts afresh.

    ipython-sql keeps one connection per URL for ever (the naive strategy); an earlier run's
    restart may have killed it, and replacing it would make SQLAlchemy log a failed reset.
    ``invalidate()`` closes it without that reset.
    """
    from sql.connection import Connection

    for connection in Connection.connections.values():
        connection.internal_connection.invalidate()
    Connection.connections.clear()
    Connection.current = None


def sql_connection():
    """The driver's connection that ``%sql`` runs its statements on, for a helper that should ask
    over it rather than open (and leave listed) one of its own."""
    from sql.connection import Connection

    return Connection.current.internal_connection.connection.dbapi_connection


def describe():
    """The settings as one line, without the password."""
    return f"{DB_USER}@{DB_HOST}:{DB_PORT}/{DB_SCHM}" + (" (the course's local server)" if LOCAL_SERVER else " (your own server)")
