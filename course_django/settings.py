"""Django settings for the course's small project: the MySQL backend on mysqlclient, the course's
server from ``config.py``, and one alias per way of holding connections (``SETTINGS``):

- ``default``: Django as shipped: ``CONN_MAX_AGE = 0``, a connection per request, closed when the
  request ends (``request_finished`` runs ``close_old_connections()``);
- ``persistent``: ``CONN_MAX_AGE = 600``: kept for ten minutes, checked by nobody;
- ``health_checks``: the same with ``CONN_HEALTH_CHECKS = True``: pinged before its first use in
  each request (and not at all outside one);
- ``atomic_requests``: ``health_checks`` with ``ATOMIC_REQUESTS = True``: each view in one transaction.

``COURSE_WAIT_TIMEOUT`` (seconds), when set, gives every connection that ``wait_timeout``: the
quiet night of a worker, in a second.
"""
import logging
import os

import config
from strategies import TIMEOUTS

SECRET_KEY = "course-local-only"  # a documented local default, as the database's password is: not a secret
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "course_django.urls"
INSTALLED_APPS = ["course_django"]
MIDDLEWARE = ["course_django.middleware.ErrorPage"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING_CONFIG = None
logging.getLogger("django").addHandler(logging.NullHandler())  # a failed request is its 500 page, not
logging.getLogger("django").propagate = False  # a traceback on stderr (the chapter shows the page)

SETTINGS = {
    "default": {"CONN_MAX_AGE": 0},
    "persistent": {"CONN_MAX_AGE": 600},
    "health_checks": {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True},
    "atomic_requests": {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True, "ATOMIC_REQUESTS": True},
}


def _database(**settings):
    options = dict(TIMEOUTS)
    if os.environ.get("COURSE_WAIT_TIMEOUT"):
        options["init_command"] = f"SET SESSION wait_timeout = {int(os.environ['COURSE_WAIT_TIMEOUT'])}"
    return {"ENGINE": "django.db.backends.mysql", "NAME": config.DB_SCHM, "USER": config.DB_USER,
            "PASSWORD": config.DB_PASS, "HOST": config.DB_HOST, "PORT": str(config.DB_PORT), "OPTIONS": options,
            **settings}


DATABASES = {alias: _database(**settings) for alias, settings in SETTINGS.items()}
