"""The course as a book: `make book` builds it with Sphinx and myst-nb, from the chapters' committed
outputs (nothing is executed), offline, into build/book/ (BOOK_DIR).

`make book` gathers this folder's index.md and cheatsheet.md, notebooks/, docs/ and the instructors'
guide into one source folder, so that the chapters' links to each other and to ../docs/ pictures
work in the book as they do in JupyterLab.

One setting makes the repository link and the launch buttons: BOOK_REPOSITORY, a GitHub address
(https://github.com/OWNER/REPO); without it, the git remote `origin` when that is a GitHub address.
Without either the book has no launch buttons, and its first page says how to launch from a fork.
"""
import os
import re
import subprocess
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform

project = "Connection strategies for MySQL: robust, simple, no pooling"
author = "The authors of the course"
copyright = "the authors of the course; prose CC BY 4.0, code MIT"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["**/.ipynb_checkpoints", "work", "build"]

# The committed outputs are what nbval checks: the book shows exactly those, and runs nothing.
nb_execution_mode = "off"
# Section links inside and between chapters (#the-safe-reconnect, 02_per_request.ipynb#...).
myst_heading_anchors = 3
# {{ launch }} on the first page: how to run the chapters, from the repository setting below
myst_enable_extensions = ["substitution"]


def github_repository():
    """https://github.com/OWNER/REPO from BOOK_REPOSITORY, else from the git remote origin; or None."""
    address = os.environ.get("BOOK_REPOSITORY", "").strip()
    if not address:
        try:
            address = subprocess.run(["git", "remote", "get-url", "origin"], cwd=Path(__file__).parent,
                                     capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            address = ""
    found = re.fullmatch(r"(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
                         r"([\w.-]+)/([\w.-]+?)(?:\.git)?/?", address)
    if found is None:
        if os.environ.get("BOOK_REPOSITORY", "").strip():
            raise ValueError(f"BOOK_REPOSITORY must be a GitHub address, https://github.com/OWNER/REPO, "
                             f"not {address!r}")
        return None
    return f"https://github.com/{found[1]}/{found[2]}"


REPOSITORY = github_repository()
FIRST_CHAPTER = "work/00_setup.ipynb"  # Binder and the dev container open the learner's copies (binder/start)


def binder_url(repository, path=FIRST_CHAPTER):
    return f"https://mybinder.org/v2/gh/{repository.removeprefix('https://github.com/')}/HEAD?urlpath=lab/tree/{path}"


def codespaces_url(repository):
    return f"https://codespaces.new/{repository.removeprefix('https://github.com/')}?quickstart=1"


if REPOSITORY:
    LAUNCH = (f"Run the chapters yourself: [on Binder]({binder_url(REPOSITORY)}) (in the browser, nothing to "
              f"install), [in GitHub Codespaces]({codespaces_url(REPOSITORY)}), or clone "
              f"[the repository]({REPOSITORY}) and run `make lab`.")
else:
    LAUNCH = ("Run the chapters yourself: clone the course's repository and run `make lab`; or, from your own fork "
              "on GitHub, open `https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=lab/tree/work/00_setup.ipynb` "
              "(Binder) or `https://codespaces.new/OWNER/REPO` (Codespaces), with your fork's OWNER and REPO. "
              "A book built with `BOOK_REPOSITORY=https://github.com/OWNER/REPO make book` has these links and "
              "a launch button on every chapter.")
myst_substitutions = {"launch": LAUNCH}

html_theme = "sphinx_book_theme"
html_title = "Connection strategies for MySQL"
html_static_path = ["_static"]
html_css_files = ["book.css"]  # code and outputs wrapped to the page, never scrolled sideways
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,  # each chapter as the .ipynb a reader can run
    "home_page_in_toc": True,
}
# One search box: the header's (or, on a narrow screen, its twin), not a second one in the sidebar
html_sidebars = {"**": ["navbar-logo.html", "icon-links.html", "sbt-sidebar-nav.html"]}
if REPOSITORY:
    html_theme_options.update(repository_url=REPOSITORY, repository_branch="HEAD", use_repository_button=True)

# The error codes the chapters show, and what each means: each is an index entry where a chapter
# shows it, so that a search for the number finds those chapters (Sphinx's full-text index leaves
# out bare numbers, and its search page skips them in a query; index entries it matches whole).
# The cheat sheet (cheatsheet.md) explains them.
ERROR_CODES = {
    1040: "too many connections", 1044: "access denied to a schema", 1045: "access denied (password)",
    1047: "Galera node not ready", 1049: "unknown schema", 1062: "duplicate key", 1095: "not your connection",
    1142: "command denied", 1146: "table does not exist", 1205: "lock wait timeout", 1213: "deadlock",
    1227: "privilege missing", 1290: "read-only server", 1317: "query interrupted", 1927: "connection was killed",
    2002: "cannot connect (socket)", 2003: "cannot connect (TCP)", 2006: "server has gone away",
    2013: "lost connection during query", 2014: "commands out of sync", 4031: "disconnected for inactivity",
}
CODE = re.compile(r"(?<![\d.,])(" + "|".join(map(str, ERROR_CODES)) + r")(?![\d])")


class ErrorCodeIndex(SphinxTransform):
    """An index entry, with a target, before the first block of a page that shows an error code: one
    search result per page and code, leading to where the page first shows it."""

    default_priority = 800  # before the index domain collects entries (SphinxDomains, 850)

    def apply(self, **kwargs):
        found = {}  # code -> (the section, its child that first shows the code)
        for text in list(self.document.findall(nodes.Text)):
            for code in {int(match) for match in CODE.findall(str(text))}:
                block, section = text.parent, None
                while block is not None and block.parent is not None:
                    if isinstance(block.parent, (nodes.section, nodes.document)):
                        section = block.parent
                        break
                    block = block.parent
                if section is not None:
                    found.setdefault(code, (section, block))
        for code, (section, block) in sorted(found.items()):
            target_id = f"error-{code}"
            target = nodes.target("", "", ids=[target_id])
            entry = addnodes.index(entries=[("single", f"{code}; {ERROR_CODES[code]}", target_id, "", None)])
            position = section.index(block)
            section.insert(position, [entry, target])


class SolutionPrompt(SphinxTransform):
    """The toggle of a collapsed cell says what it holds: "Solution" or "Hint" by the cell's first line
    (`%%solution`, solutions.py; or a comment), rather than myst-nb's "Show code cell content"."""

    default_priority = 800

    def apply(self, **kwargs):
        for cell in self.document.findall(nodes.container):
            if cell.get("nb_element") != "cell_code" or not cell.get("hide_mode"):
                continue
            source = next((child.astext() for child in cell.findall(nodes.literal_block)), "")
            first = source.lstrip().split("\n", 1)[0].lstrip("#% ").lower()
            for word in ("solution", "hint"):
                if first.startswith(word):
                    cell["prompt_show"], cell["prompt_hide"] = word.capitalize(), f"Hide the {word}"


def launch_buttons(app, pagename, templatename, context, doctree):
    """Binder and Codespaces in each chapter's header, opening the learner's copy in work/."""
    if not REPOSITORY or not pagename.startswith("notebooks/"):
        return
    chapter = f"work/{pagename.removeprefix('notebooks/')}.ipynb"
    context["header_buttons"].append({
        "type": "group", "tooltip": "Run this chapter", "icon": "fas fa-rocket", "label": "launch-buttons",
        "buttons": [
            {"type": "link", "text": "Binder", "tooltip": "Run it on Binder", "icon": "fas fa-rocket",
             "url": binder_url(REPOSITORY, chapter)},
            {"type": "link", "text": "Codespaces", "tooltip": "Run it in GitHub Codespaces", "icon": "fab fa-github",
             "url": codespaces_url(REPOSITORY)},
        ]})


def setup(app):
    app.add_transform(ErrorCodeIndex)
    app.add_transform(SolutionPrompt)
    app.connect("html-page-context", launch_buttons, priority=502)  # after the theme's own buttons (501)
