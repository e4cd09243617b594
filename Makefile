# Two commands for a newcomer: `make lab` and `make test`. Each sets up what is missing first.
VENV := .venv
PY := $(VENV)/bin/python
LAB_PORT ?= 8888
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)  # JupyterLab refuses root without it

STRATEGY ?= naive
APP_PORT ?= 5000

.PHONY: setup server stop status lab test app

setup:             ## system packages and .venv, where missing
	@bash bin/setup

server: setup      ## start the local MariaDB server (or check your own, when DB_HOST is set)
	@$(PY) -m localdb start

stop:              ## stop the local MariaDB server
	@$(PY) -m localdb stop

status:
	@$(PY) -m localdb status

lab: server        ## open the course in JupyterLab
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) $(ALLOW_ROOT)

test: server       ## every unit test and every notebook, strictly checked
	$(VENV)/bin/pytest

app: server        ## serve the seed app for your browser: make app STRATEGY=per_request
	STRATEGY=$(STRATEGY) APP_PORT=$(APP_PORT) $(PY) app.py
