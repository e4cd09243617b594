"""The book as a reader meets it: built by `make book` from the committed outputs, served over HTTP,
opened in headless Chromium, every internal link followed and every picture loaded; none broken.

Run with `make test-browser`.
"""
import functools
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from urllib.parse import urldefrag, urlparse

import pytest
from playwright.sync_api import sync_playwright

from conftest import CHROMIUM_FLAGS, ROOT

pytestmark = pytest.mark.browser


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """`make book` into a temporary folder, served on 127.0.0.1; the URL of its first page."""
    out = tmp_path_factory.mktemp("book")
    subprocess.run(["make", "-s", "book", f"BOOK_DIR={out}"], cwd=ROOT, check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def page(book):
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS, headless=True)
        yield browser.new_page()
        browser.close()


def crawl(page, start):
    """Every page reachable from ``start`` by the book's own links; for each, its links and pictures."""
    origin = urlparse(start).netloc
    todo, pages = [start], {}
    while todo:
        url = todo.pop()
        if url in pages:
            continue
        response = page.goto(url)
        assert response.ok, f"{url}: {response.status}"
        page.wait_for_load_state("load")
        links = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        pictures = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.src, i.complete && i.naturalWidth > 0])")
        ids = set(page.eval_on_selector_all("[id]", "nodes => nodes.map(n => n.id)"))
        pages[url] = {"links": [link for link in links if urlparse(link).netloc == origin], "pictures": pictures,
                      "ids": ids}
        for link in pages[url]["links"]:
            target = urldefrag(link).url
            if target.endswith(".html") and target not in pages:
                todo.append(target)
    return pages


def test_every_internal_link_and_picture_of_the_book_works(page, book):
    pages = crawl(page, book)
    chapters = [url for url in pages if "/notebooks/" in url]
    assert len(chapters) == len(list((ROOT / "notebooks").glob("*.ipynb")))  # every chapter is reachable
    for url, found in pages.items():
        for src, loaded in found["pictures"]:
            assert loaded, f"{url}: the picture {src} does not load"
        for link in found["links"]:
            target, fragment = urldefrag(link)
            if target.endswith(".html"):
                assert target in pages, f"{url}: {link} leads nowhere"
                assert not fragment or fragment in pages[target]["ids"], f"{url}: {link} has no such section"
            else:  # a downloadable notebook, a picture, a stylesheet: it must be there
                assert page.request.get(target).ok, f"{url}: {link} is broken"
    broken = [url for url in chapters if url.endswith("01_naive.html")][0]
    assert any(src.endswith("broken.png") for src, _ in pages[broken]["pictures"])  # the chapters' own pictures


def test_solutions_are_collapsed_and_chapters_link_to_each_other(page, book):
    page.goto(book.replace("index.html", "notebooks/01_naive.html"))
    solution = page.locator("details", has_text="%%solution")
    assert solution.count() == 1 and solution.get_attribute("open") is None  # closed until the reader opens it
    assert solution.locator("summary").inner_text().strip() == "Solution"  # not "Show code cell content"
    hint = page.locator("details", has_text="faults.restart_server()").filter(has_not_text="%%solution")
    assert hint.count() == 1 and hint.get_attribute("open") is None  # the hint, collapsed too
    assert hint.locator("summary").inner_text().strip() == "Hint"
    assert not page.get_by_text("8 threads: 500 Internal Server Error").last.is_visible()  # its output too
    page.locator("a", has_text="02 · Per request").last.click()
    assert page.url.endswith("notebooks/02_per_request.html")


def search(page, book, query):
    """The pages the book's own search page lists for ``query``, as the reader would get them."""
    page.goto(book.replace("index.html", f"search.html?q={query}"))
    # the page lists its results one by one, then says so in its summary
    page.locator(".search-summary", has_text="Search finished").wait_for(timeout=30_000)
    return {urldefrag(link).url.rsplit("/", 1)[-1] for link in
            page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.href)")}


def test_the_book_can_be_searched_offline(page, book):
    found = search(page, book, "wait_timeout")
    assert len(found) >= 3  # the chapters that speak of it


@pytest.mark.parametrize("code, chapter", [("2013", "01_naive"), ("2006", "01_naive"), ("1290", "08_failover"),
                                           ("1213", "06_transactions")])
def test_a_search_for_an_error_code_finds_the_chapters_that_show_it(page, book, code, chapter):
    found = search(page, book, code)
    assert f"{chapter}.html" in found, found
    shown = {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")
             if re.search(rf"(?<![\d.,]){code}(?!\d)", path.read_text())}
    assert {f"{stem}.html" for stem in shown} <= found  # every chapter that shows it


@pytest.mark.parametrize("width", [1280, 500])
def test_every_page_has_one_search_box_and_no_code_wider_than_the_page(page, book, width):
    page.set_viewport_size({"width": width, "height": 900})
    try:
        for chapter in sorted((ROOT / "notebooks").glob("*.ipynb")):
            page.goto(book.replace("index.html", f"notebooks/{chapter.stem}.html"))
            page.wait_for_load_state("load")
            boxes = page.eval_on_selector_all(".search-button-field, .search-button, input[type=search]",
                                              "nodes => nodes.filter(n => n.offsetParent !== null).length")
            assert boxes == 1, f"{chapter.stem}: {boxes} search boxes at {width} px"
            wide = page.eval_on_selector_all("pre", "nodes => nodes.filter(n => n.scrollWidth > n.clientWidth + 1)"
                                                    ".map(n => n.innerText.slice(0, 60))")
            assert not wide, f"{chapter.stem}: code scrolls sideways at {width} px: {wide}"
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})


def test_the_cheat_sheet_and_the_instructors_guide_are_in_the_book(page, book):
    page.goto(book)
    page.locator("a", has_text="Cheat sheet").first.click()
    page.wait_for_url("**/cheatsheet.html")  # the click starts the navigation; wait for it to land
    assert page.get_by_text("2013", exact=True).count() >= 1
    page.goto(book)
    page.locator("a", has_text="Instructor").first.click()
    page.wait_for_url("**/instructors/guide.html")
    assert page.get_by_text("The shared-server variant").count()


def test_launch_buttons_come_from_one_setting_and_open_the_learners_copies(tmp_path, book):
    """Without a GitHub repository the first page says how to launch from a fork; with
    BOOK_REPOSITORY, every chapter has Binder and Codespaces buttons and the book links the repository."""
    remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=ROOT, capture_output=True, text=True).stdout
    first = urlopen_text(book)
    if "github.com" not in remote:
        assert "from your own fork" in first and "mybinder.org/v2/gh/OWNER/REPO" in first
        assert "codespaces.new/" not in urlopen_text(book.replace("index.html", "notebooks/01_naive.html"))
    out = tmp_path / "book"
    subprocess.run(["make", "-s", "book", f"BOOK_DIR={out}"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "BOOK_REPOSITORY": "https://github.com/someone/their-fork"})
    assert 'href="https://github.com/someone/their-fork"' in (out / "index.html").read_text()
    for chapter in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (out / "notebooks" / f"{chapter.stem}.html").read_text()
        assert ("https://mybinder.org/v2/gh/someone/their-fork/HEAD?urlpath=lab/tree/work/"
                f"{chapter.stem}.ipynb") in html  # the learner's copy, which binder/start makes
        assert "https://codespaces.new/someone/their-fork" in html
    refused = subprocess.run(["make", "-s", "book", f"BOOK_DIR={out}"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "BOOK_REPOSITORY": "not-a-github-address"})
    assert refused.returncode != 0 and "BOOK_REPOSITORY must be a GitHub address" in refused.stderr


def urlopen_text(url):
    from urllib.request import urlopen

    with urlopen(url) as response:
        return response.read().decode()
