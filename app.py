"""The seed tutorial's web app, on Werkzeug: three routes over the ``Person`` model.

The seed ran on simplerr, whose ``on_pre_response`` / ``on_post_response`` hooks opened and
closed the connection. Here the same two hooks come from the connection strategy
(``strategies.Strategy.request``), picked by name::

    STRATEGY=per_request python app.py     # or: make app STRATEGY=per_request

A view that fails answers 500 with the error's class and message, the part of the seed's
debugger page that matters.
"""
import json
import os
import threading
import urllib.error
import urllib.request

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server, run_simple
from werkzeug.wrappers import Request, Response

import strategies
from models import Person

URLS = Map([
    Rule("/", endpoint="index"),
    Rule("/person/all", endpoint="person_all"),
    Rule("/person/first", endpoint="person_first"),
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


def as_json(data):
    return Response(json.dumps(data), mimetype="application/json")


VIEWS = {"index": index, "person_all": person_all, "person_first": person_first}


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


class Server:
    """The app on a real WSGI server, in a background thread, on 127.0.0.1 and a free port."""

    def __init__(self, app, port=0):
        self.app = app
        self.httpd = make_server("127.0.0.1", port, app, request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path):
        """GET ``path`` over real HTTP; the status and the body, as one line, as a reader would see them."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return f"{status} {body.decode().strip()}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def main():
    name = os.environ.get("STRATEGY", "naive")
    if name not in strategies.STRATEGIES:
        raise SystemExit(f"STRATEGY must be one of {', '.join(strategies.STRATEGIES)}, not {name!r}")
    port = int(os.environ.get("APP_PORT", "5000"))
    print(f"serving the seed app with the {name} strategy on http://127.0.0.1:{port}/")
    run_simple("127.0.0.1", port, App(strategies.STRATEGIES[name]()), threaded=False)


if __name__ == "__main__":
    main()
