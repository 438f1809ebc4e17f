# Two commands (see README):  make run  |  make test
PYTHON ?= python3
VENV   ?= .venv
HOST   ?= 127.0.0.1
PORT   ?= 8000
PY      = $(VENV)/bin/python

.PHONY: run test serve migrate demo bench clean

$(VENV)/.installed-run: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ needed (3.11 recommended)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt $(VENV)/.installed-run
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

## Install, migrate, create the demo accounts (demo mode only: DJANGO_DEBUG on, the default, or
## INBOX_DEMO=1; none with DJANGO_DEBUG=0), and serve on http://$(HOST):$(PORT) with uvicorn (as the
## image), the fallbacks' worker (manage.py inbox_worker) beside it: scripts/serve.py stops both together.
run: $(VENV)/.installed-run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py inbox_demo --if-demo
	@echo "Inbox: open http://$(HOST):$(PORT)/  (admin: http://$(HOST):$(PORT)/admin/, API docs: http://$(HOST):$(PORT)/api/docs/)"
	exec $(PY) scripts/serve.py --host $(HOST) --port $(PORT)

## Install the test dependencies, check the import rule (.importlinter), and run the whole suite
## (pytest's "no tests" exit code 5 is a failure).
test: $(VENV)/.installed-test
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(TEST_ARGS)

bench: $(VENV)/.installed-test
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles db.sqlite3 .pytest-db*.sqlite3
