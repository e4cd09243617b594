# Two commands for a newcomer: `make lab` and `make test`. Each sets up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
LAB_PORT ?= 8888
# JupyterLab serves the repository (notebooks show docs/ pictures) and opens on your copies of the
# chapters in work/ (ignored by git), so that running and changing them never touches notebooks/
LAB_ROOT ?= .
LAB_DIR ?= work
BOOK_DIR ?= build/book
# Python keeps each module it compiles (and pytest each test module it rewrites) in __pycache__/,
# ignored by git, even where the environment says not to (PYTHONDONTWRITEBYTECODE): without them
# every pytest worker, kernel and app process compiled the course's modules again, 0.9 s of a core
# for each pytest process
export PYTHONDONTWRITEBYTECODE :=
# JupyterLab refuses to run as root without --allow-root
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

STRATEGY ?= naive
APP_PORT ?= 5000
APP_WORKERS ?= 2
APP_THREADS ?= 4

REPLICATION ?= async
# make test's worker processes, a server each; against a server of your own (DB_HOST) one process.
# Each takes whole files, in the order tests/conftest.py gives (the longest first), not xdist's own
# (the most tests first: --no-loadscope-reorder). Twelve on 2 cores: many files mostly wait (for a
# timeout, a cluster to form), and with eight the cores stood half idle for tens of seconds
TEST_WORKERS ?= 12

.PHONY: setup setup-frameworks setup-test setup-asyncio setup-book setup-browser server stop status work lab lab-refresh test test-browser app pictures book pair pair-stop galera galera-stop

setup:             ## system packages and .venv with what a learner needs, where missing
	@bash bin/setup

setup-frameworks:  ## also chapter 09's Django and Celery (requirements-frameworks.txt)
	@bash bin/setup --frameworks

setup-test:        ## also what the tests need (requirements-test.txt, and chapter 09's set)
	@bash bin/setup --test

setup-asyncio:     ## also what chapter 10 (asyncio) needs (requirements-asyncio.txt)
	@bash bin/setup --asyncio

setup-book:        ## also what the book needs (requirements-book.txt)
	@bash bin/setup --book

setup-browser:     ## the tests', the book's and Chromium, for the browser test and the pictures
	@bash bin/setup --test --browser

server: setup      ## start the local MariaDB server (or check your own, when DB_HOST is set)
	@$(PY) -m localdb start

stop:              ## stop the local MariaDB server (and chapter 09's broker, if it runs)
	@$(PY) -m localdb stop
	@$(PY) -m broker stop >/dev/null

status:
	@$(PY) -m localdb status

pair: server       ## chapter 08's primary and replica, with HAProxy in front: make pair REPLICATION=semisync
	@$(PY) -m pair start $(REPLICATION)

pair-stop:         ## stop the pair and HAProxy, and delete their data
	@$(PY) -m pair stop

galera: server     ## chapter 08b's Galera cluster: three nodes that all take writes, HAProxy in front
	@$(PY) -m galera start

galera-stop:       ## stop the Galera cluster and its HAProxy, and delete their data
	@$(PY) -m galera stop

work:              ## your copies of the chapters in work/: the missing ones added, yours never overwritten
	@mkdir -p "$(LAB_ROOT)/$(LAB_DIR)" && cp -n notebooks/*.ipynb "$(LAB_ROOT)/$(LAB_DIR)/"

lab: server work   ## open the course in JupyterLab, on your copies of the chapters in work/
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(LAB_ROOT) --LabApp.default_url=/lab/tree/$(LAB_DIR) --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) $(ALLOW_ROOT)

lab-refresh:       ## replace your copies in work/ with the committed chapters (your changes there are lost)
	@mkdir -p "$(LAB_ROOT)/$(LAB_DIR)" && cp notebooks/*.ipynb "$(LAB_ROOT)/$(LAB_DIR)/" && echo "work/: fresh copies of notebooks/"

test: setup-test server  ## every unit test and every notebook, strictly checked
	$(VENV)/bin/pytest $(if $(DB_HOST),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

app: server        ## serve the seed app under gunicorn for your browser: make app STRATEGY=per_request
	STRATEGY=$(STRATEGY) $(VENV)/bin/gunicorn --bind 127.0.0.1:$(APP_PORT) --workers $(APP_WORKERS) \
	  --threads $(APP_THREADS) --preload 'app:create_app()'

test-browser: setup-browser server  ## 00_setup run through JupyterLab's menu in headless Chromium; the book's links
	@mkdir -p build
	$(VENV)/bin/pytest -m browser tests/browser

pictures: setup-browser server  ## docs/person.png and docs/broken.png, from the running app
	$(PY) docs/make_pictures.py

# BOOK_REPOSITORY=https://github.com/OWNER/REPO: the book's repository link and launch buttons (default: the
# git remote origin, when it is on GitHub; without one, the book says how to launch from a fork)
book: setup-book   ## the course as a book (Sphinx, myst-nb) from the committed outputs, offline, in build/book (BOOK_DIR)
	@case "$$BOOK_REPOSITORY" in ""|https://github.com/?*/?*) ;; *) echo "make book: BOOK_REPOSITORY must be a" \
	  "GitHub address, https://github.com/OWNER/REPO, not '$$BOOK_REPOSITORY'; unset it to use the git remote" >&2; exit 2 ;; esac
	@rm -rf build/book-src && mkdir -p build/book-src/instructors && cp -R book/index.md book/cheatsheet.md notebooks docs build/book-src/ \
	  && cp instructors/guide.md build/book-src/instructors/
	$(VENV)/bin/sphinx-build -q -W --keep-going -b html -c book build/book-src $(BOOK_DIR)
	@echo "the book: $(BOOK_DIR)/index.html"
