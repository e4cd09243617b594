"""Make the seed's two pictures from the course's own app, in headless Chromium:

- docs/person.png: the Person page, ``/person/first``, working;
- docs/broken.png: the same page after the app's connection was killed, as in the seed's ``kill 30``.

    .venv/bin/python docs/make_pictures.py          # needs Chromium: `make pictures` installs it

The app's answer to the browser's request is recorded and checked after each screenshot, so a
picture always shows what the app really answered: 2013 for the first request after the kill.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import app
import models
import faults
import strategies as S

HERE = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def chromium(*args):
    """Run headless Chromium once, with a fresh profile; its standard output."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


class Recorder:
    """WSGI middleware that keeps the body of the last answer to each path."""

    def __init__(self, app):
        self.app, self.answers = app, {}

    def __call__(self, environ, start_response):
        body = b"".join(self.app(environ, start_response))
        self.answers[environ["PATH_INFO"]] = body.decode()
        return [body]


def picture(server, recorder, path, expected, out):
    """Screenshot ``path`` of the app into ``out``; fail unless the app's answer held ``expected``."""
    chromium(f"--screenshot={out}", "--window-size=900,260", server.url + path)
    answer = recorder.answers.get(path, "(no request)")
    if expected not in answer:
        raise RuntimeError(f"{path} answered {answer!r}, not {expected!r}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the pictures (default: docs/)")
    args = parser.parse_args(argv)
    models.seed()
    naive = S.Naive()
    recorder = Recorder(app.App(naive))
    server = app.Server(recorder, threads=1)  # the seed's app served one request at a time
    try:
        picture(server, recorder, "/person/first", '{"id": 1, "firstname": "John", "surname": "Bob"}',
                args.out / "person.png")
        faults.kill_all(naive.connection_ids())  # the seed's `kill 30`: the app's one connection
        picture(server, recorder, "/person/first", "(2013, 'Lost connection to server during query')",
                args.out / "broken.png")
    finally:
        server.stop()
        naive.close()
    print(f"wrote {args.out / 'person.png'} and {args.out / 'broken.png'}")


if __name__ == "__main__":
    sys.exit(main())
