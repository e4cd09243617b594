"""Make the seed's two pictures from the course's own app, in headless Chromium:

- docs/person.png: the Person page, ``/person/first``, working;
- docs/broken.png: the same page after the app's connection was killed, as in the seed's ``kill 30``.

    .venv/bin/python docs/make_pictures.py          # needs Chromium: `make pictures` installs it

The app's answer to the browser's request is recorded and checked before each screenshot, so a
picture always shows what the app really answered: 2013 for the first request after the kill.
Each picture is as large as the page's text, and no larger: the window is sized to it.
"""
import argparse
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import sync_playwright

import app
import models
import faults
import strategies as S

HERE = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]
MARGIN = 8  # CSS pixels right of and below the text: the page's own margin on its left and top

# Where the page's text ends, right and down, in CSS pixels: each text node's own boxes, not its
# block's, which are as wide as the window
TEXT_EXTENT = """() => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let right = 0, bottom = 0;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const box of range.getClientRects()) {
      right = Math.max(right, box.right);
      bottom = Math.max(bottom, box.bottom);
    }
  }
  return [Math.ceil(right), Math.ceil(bottom)];
}"""


@contextmanager
def chromium_page():
    """A page of headless Chromium (the system's), with a fresh profile."""
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser.new_page()
        finally:
            browser.close()


class Recorder:
    """WSGI middleware that keeps the body of the last answer to each path."""

    def __init__(self, app):
        self.app, self.answers = app, {}

    def __call__(self, environ, start_response):
        body = b"".join(self.app(environ, start_response))
        self.answers[environ["PATH_INFO"]] = body.decode()
        return [body]


def picture(page, server, recorder, path, expected, out):
    """Screenshot ``path`` of the app into ``out``, the window cut to the page's text; fail unless
    the app's answer held ``expected``."""
    page.set_viewport_size({"width": 1200, "height": 600})
    page.goto(server.url + path)
    answer = recorder.answers.get(path, "(no request)")
    if expected not in answer:
        raise RuntimeError(f"{path} answered {answer!r}, not {expected!r}")
    right, bottom = page.evaluate(TEXT_EXTENT)
    page.set_viewport_size({"width": right + MARGIN, "height": bottom + MARGIN})
    page.screenshot(path=str(out))
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
        with chromium_page() as page:
            picture(page, server, recorder, "/person/first", '{"id": 1, "firstname": "John", "surname": "Bob"}',
                    args.out / "person.png")
            faults.kill_all(naive.connection_ids())  # the seed's `kill 30`: the app's one connection
            picture(page, server, recorder, "/person/first", "(2013, 'Lost connection to server during query')",
                    args.out / "broken.png")
    finally:
        server.stop()
        naive.close()
    print(f"wrote {args.out / 'person.png'} and {args.out / 'broken.png'}")


if __name__ == "__main__":
    sys.exit(main())
