# Two commands a new user needs: `make up` (service + sample corpus) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Quiet: no progress bars (one endless line in a CI log), no version nag, no root notice.
PIP_QUIET := --quiet --progress-bar off --disable-pip-version-check --root-user-action=ignore
PIP := $(PY) -m pip install $(PIP_QUIET) -c constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install up test quick lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@echo "installing torch (CPU) first, then FreshRAG and its dependencies…"
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps unstructured-inference==1.6.14
	touch $(STAMP)

install: $(STAMP)

up: install
	$(VENV)/bin/freshrag up

test: install
	$(VENV)/bin/pytest

quick: install
	$(VENV)/bin/pytest -m "unit and not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) -m bench.parse
	$(PY) -m bench.ingest
	$(PY) -m bench.freshness
	$(PY) -m bench.replay
	$(PY) -m bench.retrieve
	$(PY) -m bench.retrieve --write-load
	$(PY) -m bench.client
	$(PY) -m bench.broker
	$(PY) -m bench.quality
	$(PY) -m bench.stages_off
	$(PY) -m bench.tune --second --keep 0,0.5,1

clean:
	rm -rf $(VENV) data .pytest_cache
