"""The course as a reader meets it: JupyterLab started as `make lab` starts it, 00_setup opened in
headless Chromium, every cell run through JupyterLab's own menu, the outputs checked on the page.

Run with `make test-browser`. JupyterLab serves a copy of notebooks/, so the run cannot touch the
committed notebooks.
"""
import re
import shutil
import subprocess
import tempfile

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import CHROMIUM_FLAGS, ROOT, running_lab

pytestmark = pytest.mark.browser


@pytest.fixture
def lab(tmp_path):
    """`make lab` on a copy of notebooks/ and docs/; the URL with its token."""
    for folder in ("notebooks", "docs"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    with running_lab(f"LAB_ROOT={tmp_path}", seconds=120) as url:
        yield url


def test_00_setup_runs_in_jupyterlab(lab):
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        page = browser.new_page()
        page.goto(lab.replace("/work?", "/work/00_setup.ipynb?"), timeout=60_000)
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        # The kernel has started and answered (the status bar says so): cells sent earlier may be dropped.
        expect(page.locator(".jp-StatusBar-Widget", has_text="Python 3 (ipykernel) | Idle")).to_be_visible(
            timeout=120_000)

        page.locator(".lm-MenuBar-item", has_text="Run").click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()

        cells = notebook.locator(".jp-CodeCell")
        prompts = notebook.locator(".jp-CodeCell .jp-InputArea-prompt")
        expect(cells.last.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"\[\d+\]:"), timeout=120_000)
        texts = prompts.all_inner_texts()
        assert all(re.fullmatch(r"\[\d+\]:", t.strip()) for t in texts if t.strip()), texts
        assert notebook.locator("table.dataframe").count() >= 1  # the Person rows, as a pandas table
        assert notebook.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        # text_content, not inner_text: JupyterLab 4 leaves cells far from the view unrendered (content-visibility)
        assert "John" in notebook.locator("table.dataframe").first.text_content()
        # the exercise as a learner meets it after Run All: its hint closed, its solution collapsed to a
        # first line that says nothing, and run without its answer (make lab sets no COURSE_SOLUTIONS)
        hint = notebook.locator(".jp-MarkdownCell details", has_text="Hint")
        assert hint.count() == 1 and hint.get_attribute("open") is None
        solution = notebook.locator(".jp-CodeCell", has=page.locator(".jp-InputPlaceholder"))
        assert solution.count() == 1 and solution.locator(".jp-InputPlaceholder").text_content().strip() == "%%solution"
        assert "The solution is not run" in solution.text_content() and "3 3" not in solution.text_content()
        page.screenshot(path=str(ROOT / "build" / "00_setup-in-chromium.png"), full_page=False)
        browser.close()


def test_the_seed_pictures_are_made_from_the_app_and_cropped_to_what_the_page_says(tmp_path):
    from PIL import Image, ImageOps

    subprocess.run([str(ROOT / ".venv/bin/python"), "docs/make_pictures.py", "--out", str(tmp_path)], cwd=ROOT, check=True)
    for name in ("person.png", "broken.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(tmp_path / name) as made:
            _, _, right, bottom = ImageOps.invert(made.convert("L")).point(lambda v: 255 if v > 128 else 0).getbbox()
            blank = (made.width - right, made.height - bottom)  # right of and below the text (dark pixels)
            assert all(0 < edge <= 12 for edge in blank), (name, made.size, blank)
