"""The chaos run's asyncio rows: chapter 10's way (``asgi_app``: ``AsyncMySQLDatabase`` under uvicorn, each
request bounded by ``asyncio.timeout()``, a cancelled statement's connection closed) through the same
seeded requests and faults as ``bench/chaos.py``, from as many client threads, through the relay.

The requests are the chaos run's own (``ChaosApp``'s methods, run inside peewee's greenlet bridge).
Where the sync run's app gives up on a slow read at its ``read_timeout``, here the request's timeout
cancels it mid-statement: the ``cancel`` fault. Reads ask for their own request id and check the
answer: a connection handed on in the middle of another request's answer shows as ``wrong_answers``.

A request's time, against its bound, is the app's own: from its arrival to its answer (the client's
threads, in the same process, wait their turn on a busy machine too).
"""
import asyncio
import time
import warnings
from dataclasses import dataclass

from playhouse.pwasyncio import AsyncMySQLConnection, AsyncMySQLDatabase, await_

import asgi_app
import config
import faults
import strategies as S
from bench import chaos
from bench.chaos_app import SCHEMA, ChaosApp

# aiomysql turns the server's note on the implicit_commit request's CREATE TABLE IF NOT EXISTS into a Python
# warning: no news here
warnings.filterwarnings("ignore", message="Table 'chaos_scratch' already exists")

NAME, = chaos.ASYNCIO_NAMES
REQUEST_TIMEOUT = chaos.READ_TIMEOUT  # what bounds a request here, as read_timeout bounds a statement there


@dataclass
class AsyncTally(chaos.Tally):
    runner: str = "asyncio"
    wrong_answers: int = 0  # reads answered with what another request asked for


def plan(requests, seed, fault_every=35):
    """``chaos.plan``'s schedule, the client's timeout on a slow read becoming the request's cancellation."""
    return [(kind, "cancel" if fault == "read_timeout" else fault) for kind, fault in chaos.plan(requests, seed,
                                                                                                fault_every)]


class WrongAnswer(Exception):
    """A read was answered with another request's answer."""


class ChaosConnection(AsyncMySQLConnection):
    """pwasyncio's connection, with what the chaos requests ask of a driver's: its id and its socket."""

    def thread_id(self):
        return self.conn.server_thread_id[0]

    def fileno(self):
        if self.conn is None or self.conn._writer is None:
            raise ValueError("closed")
        return self.conn._writer.transport.get_extra_info("socket").fileno()


class ChaosDatabase(AsyncMySQLDatabase):
    async def _pool_acquire(self, pool):
        return ChaosConnection((await super()._pool_acquire(pool)).conn)


class AsyncChaosApp(ChaosApp):
    """The chaos requests as an ASGI app: ``/<kind>/<request id>?fault=<fault>``."""

    def __init__(self, db, link, request_timeout=REQUEST_TIMEOUT, guard=True):
        super().__init__(None, link, read_timeout=request_timeout)
        self.db, self.request_timeout, self.guard = db, request_timeout, guard  # guard: asgi_app's rule
        self.took = {}  # request id -> seconds, as the app timed it

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await asgi_app.AsyncApp(self.db).lifespan(receive, send)
        _, kind, request_id = scope["path"].split("/")
        fault = scope["query_string"].decode().partition("fault=")[2] or None
        status, text = await self.serve(getattr(self, kind), int(request_id), fault)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": text.encode()})

    async def serve(self, work, request_id, fault):
        """``answer()``, timed (``took``: the module's docstring says how)."""
        started = time.monotonic()
        try:
            return await self.answer(work, request_id, fault)
        finally:
            self.took[request_id] = time.monotonic() - started

    async def answer(self, work, request_id, fault):
        """As ``asgi_app.AsyncApp.serve``, answering as the chaos app does: ``ok``, or the error's class and code."""
        try:
            async with asyncio.timeout(self.request_timeout):
                try:
                    await self.db.run(work, self.db, request_id, fault)
                    return 200, "ok"
                except asyncio.CancelledError:
                    if self.guard:
                        asgi_app.close_if_cancelled(self.db)
                    raise
                finally:
                    await self.db.aclose()
        except TimeoutError:
            return 504, "Cancelled timeout"
        except Exception as error:
            return 500, f"{type(error).__name__} {S.error_code(error)}"

    def read(self, db, request_id, fault):
        if fault == "kill_during":
            return super().read(db, request_id, fault)
        answer, = db.execute_sql("SELECT %s", (request_id,)).fetchone()
        if int(answer) != request_id:
            raise WrongAnswer(answer)

    def kill_between(self, connection_id):
        """As the sync app's, in a thread: here, on the event loop, it held every other request still
        (and past its timeout) while the server wound the killed connection up (make test saw a
        request take 2.16 s against its 2 s bound)."""
        await_(asyncio.to_thread(super().kill_between, connection_id))

    def pool(self, db, request_id, fault):
        """The ids of the pool's connections, for a ``KILL`` of every one (no statement: no connection taken)."""
        pool = db._pool
        self.pooled = [c.server_thread_id[0] for c in [*pool._free, *pool._used]] if pool else []


def run(steps, threads=chaos.THREADS, request_timeout=REQUEST_TIMEOUT, rtt_ms=0, guard=True):
    """The asyncio app through ``steps`` against a fresh ``chaos_write`` table; its tally. ``guard=False``
    switches the app's cancel rule off (with ``bench.wrong_async.cancel_guard_removed()``: the self-check)."""
    admin = S.database(S.SafeReconnectMySQLDatabase)
    for sql in SCHEMA:
        admin.execute_sql(sql)
    admin.close()
    tally = AsyncTally(NAME)
    tally.bound_s = request_timeout + chaos.WORK_S
    with faults.LinkCutter(rtt_ms=rtt_ms) as link:
        db = ChaosDatabase(config.DB_SCHM, host=config.DB_HOST, port=link.port, user=config.DB_USER,
                           password=config.DB_PASS, pool_size=threads)
        chaos_app = AsyncChaosApp(db, link, request_timeout, guard)
        with asgi_app.Uvicorn(chaos_app) as server:
            played = chaos.play(steps, server.url, threads, chaos_app.counters,
                                strike=lambda fault: strike_between(fault, server, chaos_app, link))
    tally.faults_by_kind = played.faults_by_kind
    runs, rows = chaos.what_ran(chaos_app, admin)
    took = {request_id: chaos_app.took.get(request_id, seconds) for request_id, seconds in played.took.items()}
    chaos.tally_up(tally, steps, played.answers, rows, runs, played.last_fault, took)
    tally.wrong_answers = tally.errors_by_kind.get("WrongAnswer", 0)
    return tally


def strike_between(fault, server, chaos_app, link):
    """A fault between batches, on every connection the app's pool holds."""
    if fault == "silent_drop":
        link.drop_silently()
    elif fault == "restart":
        faults.restart_server()
        link.wait_until_passed_on()  # the server's hang-ups, to the app, as after a kill
    elif fault == "kill_between":
        server.get("/pool/0")
        faults.kill_all(chaos_app.pooled)
        faults.wait_until_closed(chaos_app.pooled)
        link.wait_until_passed_on()  # the server's hang-ups, to the app
    elif fault == "expire":
        server.get("/pool/0")
        chaos_app.expiring = []
        for _ in chaos_app.pooled:  # the pool hands its free connections out in turn
            server.get("/expire/0")
        faults.wait_until_closed(chaos_app.expiring)
        link.wait_until_passed_on()


def run_all(requests=2000, seed=1, fault_every=35, threads=chaos.THREADS, rtt_ms=0, request_timeout=REQUEST_TIMEOUT):
    """The asyncio rows (one, for now) through the run's schedule; ``request_timeout``: ``chaos.py
    --read-timeout``, as the sync rows' ``read_timeout``."""
    return [run(plan(requests, seed, fault_every), threads, request_timeout, rtt_ms)]
