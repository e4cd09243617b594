"""The seed tutorial's web app, on Werkzeug: three routes over the ``Person`` model.

The seed ran on simplerr, whose ``on_pre_response`` / ``on_post_response`` hooks opened and
closed the connection. Here the same two hooks come from the connection strategy
(``strategies.Strategy.request``), picked by name::

    STRATEGY=per_request python app.py     # one process, 8 threads
    make app STRATEGY=per_request          # gunicorn: 2 worker processes of 4 threads each

A view that fails answers 500 with the error's class and message, the part of the seed's
debugger page that matters. Every thread that serves requests has its own connection.
"""
import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.wrappers import Request, Response

import config
import strategies
from models import Person

URLS = Map([
    Rule("/", endpoint="index"),
    Rule("/person/all", endpoint="person_all"),
    Rule("/person/first", endpoint="person_first"),
    Rule("/whoami", endpoint="whoami"),
])


def index(db):
    links = "".join(f'<li><a href="{path}">{path}</a></li>' for path in ("/person/all", "/person/first"))
    return Response(f"<h1>simplerr</h1><ul>{links}</ul>", mimetype="text/html")


def person_all(db):
    return as_json(list(Person.select().order_by(Person.id).dicts()))


def person_first(db):
    person = Person.select().order_by(Person.id).dicts().first()
    if person is None:
        raise NotFound("no Person yet")
    return as_json(person)


def whoami(db):
    """Which process and thread served this, on which connection; and whether the answer it read
    was the answer to its own question (two processes on one connection read each other's)."""
    asked = f"{os.getpid()}/{threading.get_ident()}"
    answer, connection = db.execute_sql("SELECT %s, CONNECTION_ID()", (asked,)).fetchone()
    return as_json({"process": os.getpid(), "connection": connection, "own_answer": answer == asked})


def as_json(data):
    return Response(json.dumps(data), mimetype="application/json")


VIEWS = {"index": index, "person_all": person_all, "person_first": person_first, "whoami": whoami}


class App:
    """A WSGI app whose every request runs inside ``strategy.request()``."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, environ, start_response):
        return self.respond(Request(environ))(environ, start_response)

    def respond(self, request):
        try:
            endpoint, _ = URLS.bind_to_environ(request.environ).match()
            with self.strategy.request() as db, db.bind_ctx([Person]):
                return VIEWS[endpoint](db)
        except HTTPException as error:
            return error
        except Exception as error:  # what the seed's debugger page showed: which error, and its message
            page = f"Internal Server Error\n\n{type(error).__module__}.{type(error).__name__}: {error}\n"
            return Response(page, status=500, mimetype="text/plain")


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args):
        pass  # a line per request would fill the notebook's cells


class ThreadedServer(BaseWSGIServer):
    """A WSGI server with a fixed set of threads, as gunicorn's ``gthread`` workers and waitress
    have: each thread lives as long as the server, and so does the connection it opens.

    Requests go to the threads in turn, so that a demo knows which thread serves which request.
    """

    multithread = True

    def __init__(self, host, port, app, threads=8, **kwargs):
        super().__init__(host, port, app, **kwargs)
        self.queues = [queue.Queue() for _ in range(threads)]
        self.turn = 0
        self.workers = [threading.Thread(target=self.work, args=(q,), name=f"app-{i}", daemon=True)
                        for i, q in enumerate(self.queues)]
        for worker in self.workers:
            worker.start()

    def process_request(self, request, client_address):
        self.queues[self.turn % len(self.queues)].put((request, client_address))
        self.turn += 1

    def work(self, requests):
        while (item := requests.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def server_close(self):
        super().server_close()
        for q in self.queues:
            q.put(None)
        for worker in self.workers:
            worker.join()


class Server:
    """The app on a real threaded WSGI server (``threads`` threads), in the background, on
    127.0.0.1 and a free port."""

    def __init__(self, app, port=0, threads=8):
        self.app = app
        self.httpd = ThreadedServer("127.0.0.1", port, app, threads=threads, handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path):
        """GET ``path`` over real HTTP; the status and the body, as one line, as a reader would see them."""
        return get(self.url + path)

    def get_each_thread(self, path):
        """GET ``path`` once on every thread of the server, in turn; how many times each answer came."""
        answers = {}
        for _ in self.httpd.workers:
            answer = self.get(path)
            answers[answer] = answers.get(answer, 0) + 1
        return answers

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def get(url, timeout=30):
    """GET ``url``; ``"status body"`` on one line, or ``"000 no answer (why)"`` when the server
    hung up or did not answer within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except (OSError, http.client.HTTPException) as error:  # URLError and timeouts are OSErrors
        return f"000 no answer ({type(error).__name__})"
    return f"{status} {body.decode().strip()}"


SEED = "seed"  # the seed's own way: config.DATABASE, connected at import, knowing nothing of forks


def strategy_from_environment():
    """The strategy named by ``STRATEGY`` (default ``naive``), or a clear error naming the choices.

    ``STRATEGY=seed`` is the seed app's way: the module-level ``config.DATABASE``, a plain peewee
    database, connected when the app is made (chapter 05 shows what that does in a pre-fork server).
    """
    name = os.environ.get("STRATEGY", "naive")
    if name == SEED:
        return strategies.Naive(config.DATABASE)
    if name not in strategies.STRATEGIES:
        raise SystemExit(f"STRATEGY must be one of {', '.join([*strategies.STRATEGIES, SEED])}, not {name!r}")
    return strategies.STRATEGIES[name]()


def create_app():
    """The app for gunicorn (``gunicorn 'app:create_app()'``), with the strategy named by ``STRATEGY``.

    With ``--preload`` it runs once, in gunicorn's master, before the workers are forked: whatever
    connection it opens (the naive strategy's) the workers inherit, and each opens its own instead.
    """
    return App(strategy_from_environment())


class Gunicorn:
    """The app under gunicorn, the pre-fork server, on 127.0.0.1 and a free port: a master process
    that forks ``workers`` worker processes of ``threads`` threads each. With ``preload`` the app
    (and whatever connection it opens) is made in the master, before the fork; with
    ``max_requests`` each worker exits after that many requests and the master forks a new one.
    """

    def __init__(self, strategy="naive", workers=2, threads=4, preload=False, max_requests=0, timeout=30):
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
                   "--threads", str(threads), "--max-requests", str(max_requests), "--timeout", str(timeout),
                   "--log-level", "warning"]
        if preload:
            command.append("--preload")
        self.process = subprocess.Popen(
            [*command, "app:create_app()"], cwd=Path(__file__).resolve().parent, start_new_session=True,
            env={**os.environ, "STRATEGY": strategy}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._wait_until_serving()

    def _wait_until_serving(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}):\n{self.process.stdout.read()}")
            if not get(self.url + "/", timeout=2).startswith("000"):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {seconds} s")

    def get(self, path):
        return get(self.url + path)

    def stop(self):
        """Stop gracefully (SIGTERM, as at a deploy): workers finish their requests and exit."""
        if self.process.poll() is None:
            stop_group(self.process)
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_group(process, grace=30):
    """SIGTERM ``process``'s process group (gunicorn's, or ``make app``'s), as at a deploy; whatever of
    it still runs ``grace`` seconds on is killed: a worker waiting for an answer another worker took
    on a connection they share waits out gunicorn's own 30 s of grace, or longer."""
    os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    strategy = strategy_from_environment()
    port = int(os.environ.get("APP_PORT", "5000"))
    print(f"serving the seed app with the {strategy.name} strategy on http://127.0.0.1:{port}/ (8 threads)")
    server = ThreadedServer("127.0.0.1", port, App(strategy), handler=QuietHandler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
