"""The seed app as an ASGI app (chapter 10), on peewee's ``AsyncMySQLDatabase`` (``playhouse.pwasyncio``,
on aiomysql), served by uvicorn: the same ``Person`` routes as ``app.py``, in asyncio.

Each request is a task of its own (uvicorn makes one per request) and runs in ``Requests.serve``:
- bounded: ``asyncio.timeout(request_timeout)``, 504 when it runs out;
- the task's connection comes from the database's pool at its first statement and goes back in a
  ``finally``, so every request ends with it released;
- the rule: a connection whose statement was cancelled (the timeout, a ``wait_for``, a cancelled
  task) is closed, never put back. aiomysql 0.3.2 closes it itself (``_close_on_cancel``); the app
  closes it too, where the cancel lands (``Requests.run``: a route's own ``wait_for`` included), so
  the rule holds whatever the driver does (asyncmy did not before 0.2.13). It holds for the
  statements the app sends through ``Requests.run``; and the server still runs a cancelled
  statement to its end, on a connection the pool no longer counts.

Routes: ``/person/first``, ``/person/all``, ``/whoami`` (the connection's id, and whether the answer
read was the answer to this request's own question), ``/sleep/<seconds>`` (a slow statement),
``/expire`` (this connection's ``wait_timeout`` set to 1 s: the fault), ``/pool`` (the pool's size
and its connections' ids), ``/slow_call/<seconds>?hold=1`` (a query, an await of a slow outside call,
a query: holding the connection across the await, or releasing it first).
"""
import asyncio
import json
import threading
from urllib.parse import parse_qs

import uvicorn
from playhouse.pwasyncio import AsyncMySQLDatabase

import app
import config
from models import Person

REQUEST_TIMEOUT = 2.0  # seconds a request may take, all of it: its statements and its awaits


def database(port=None, pool_size=10, acquire_timeout=10, **options):
    """The course's settings as an ``AsyncMySQLDatabase`` (``port``: the relay's, say). Its pool:
    ``pool_size`` connections at most; ``acquire_timeout`` bounds waiting for one, and each connect."""
    return AsyncMySQLDatabase(config.DB_SCHM, host=config.DB_HOST, port=port or config.DB_PORT, user=config.DB_USER,
                              password=config.DB_PASS, pool_size=pool_size, acquire_timeout=acquire_timeout, **options)


def task_connection(db):
    """The aiomysql connection the current task holds, or None (pwasyncio keeps it in its private
    per-task state: peewee has no public name for it)."""
    held = db._state.conn
    return held.conn if held is not None else None


def close_if_cancelled(db):
    """The rule: the current task's statement was cancelled, so its connection may be in the middle
    of an answer; close it (no goodbye: the server may still be sending), and the pool drops it."""
    conn = task_connection(db)
    if conn is not None:
        conn.close()


async def slow_call(seconds):
    """An outside call that takes a while (an HTTP API, a language model): here a plain sleep."""
    await asyncio.sleep(seconds)


class Requests:
    """The routes, each a coroutine returning what to send as JSON."""

    def __init__(self, db, guard=True):
        self.db, self.guard = db, guard

    async def run(self, work):
        """``db.run(work)``; cancelled on the way (the request's timeout, a ``wait_for`` of the
        route's own, a cancelled task), the statement's connection is closed where the cancel lands."""
        try:
            return await self.db.run(work)
        except asyncio.CancelledError:
            if self.guard:
                close_if_cancelled(self.db)
            raise

    async def query(self, sql, params=()):
        return await self.run(lambda: self.db.execute_sql(sql, params).fetchall())

    async def person_first(self):
        with Person.bind_ctx(self.db):
            return await self.run(lambda: Person.select().order_by(Person.id).dicts().first())

    async def person_all(self):
        with Person.bind_ctx(self.db):
            return await self.run(lambda: list(Person.select().order_by(Person.id).dicts()))

    async def whoami(self):
        asked = f"task {id(asyncio.current_task())}"
        (answer, connection), = await self.query("SELECT %s, CONNECTION_ID()", (asked,))
        return {"connection": connection, "own_answer": answer == asked}

    async def sleep(self, seconds):
        await self.query(f"SELECT SLEEP({float(seconds)})")
        return "slept"

    async def expire(self):
        await self.query("SET SESSION wait_timeout = 1")
        return (await self.whoami())["connection"]

    async def pool(self):
        pool = self.db._pool
        if pool is None:
            return {"size": 0, "ids": []}
        return {"size": pool.size, "ids": sorted(c.server_thread_id[0] for c in [*pool._free, *pool._used])}

    async def slow_call(self, seconds, hold="1"):
        """A query, a slow outside call, a query. ``hold=0``: the connection goes back to the pool
        before the slow call, and the second query takes one again (checked by the pool as it does)."""
        first = (await self.whoami())["connection"]
        if hold == "0":
            await self.db.aclose()
        await slow_call(float(seconds))
        return {"before": first, "after": (await self.whoami())["connection"]}


class AsyncApp:
    """A plain ASGI app: ``/<route>[/<argument>][?name=value]``; JSON answers, 500 with the
    error's class and message, 504 when ``request_timeout`` runs out. Closes the pool at shutdown."""

    def __init__(self, db, request_timeout=REQUEST_TIMEOUT, guard=True):
        self.db, self.request_timeout, self.guard = db, request_timeout, guard
        self.requests = Requests(db, guard)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        parts = scope["path"].strip("/").split("/")
        name, argument = ("_".join(parts), []) if parts[0] == "person" else (parts[0], parts[1:])
        options = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
        route = getattr(self.requests, name, None) if not name.startswith("_") else None
        if route is None:
            status, body = 404, f"no route {scope['path']}"
        else:
            status, body = await self.serve(route, *argument, **options)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    async def serve(self, route, *args, **options):
        """Run one request's route, bounded, its connection released whatever happens."""
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    return 200, await route(*args, **options)
                except asyncio.CancelledError:
                    if self.guard:
                        close_if_cancelled(self.db)
                    raise
                finally:
                    await self.db.aclose()  # back to the pool (a closed one is dropped there)
        except TimeoutError:
            return 504, f"timed out after {self.request_timeout} s"
        except Exception as error:
            return 500, f"{type(error).__module__}.{type(error).__name__}: {error}"

    async def lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.db.close_pool()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Uvicorn:
    """``app`` served by uvicorn on 127.0.0.1 and a free port, its event loop in a thread of its own:
    started, and stopped as at a deploy (``stop()``: requests finish, the lifespan closes the pool)."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited before it served")
            self.thread.join(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path, timeout=30):
        """GET ``path``; ``"status body"`` on one line, as ``app.get`` gives."""
        return app.get(self.url + path, timeout=timeout)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
