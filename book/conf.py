"""The course as a book: `make book` builds it with Sphinx and myst-nb, from the chapters' committed
outputs (nothing is executed), offline, into build/book/ (BOOK_DIR).

`make book` gathers this folder's index.md, notebooks/ and docs/ into one source folder, so that
the chapters' links to each other and to ../docs/ pictures work in the book as they do in JupyterLab.
"""
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

html_theme = "sphinx_book_theme"
html_title = "Connection strategies for MySQL"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,  # each chapter as the .ipynb a reader can run
    "home_page_in_toc": True,
}
