# emkd-book: build the book and run the tests.
#   make book   execute every notebook (papermill, profile "cpu") and build the book into _build/html
#   make test   unit tests, notebook regression (nbval), smoke runs (papermill, profile "smoke"), book build, browser check
# Everything runs inside .venv, created on first use.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV   ?= .venv
# Extra arguments for pip, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=

PY        := $(VENV)/bin/python
PAPERMILL := $(VENV)/bin/papermill
JB        := $(VENV)/bin/jupyter-book
PYTEST    := PY=$(PY) scripts/pytest.sh
# Notebook kernels import emkd_lib from this checkout, also where .venv is
# shared with another checkout (its editable install points there).
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH),)

# The install stamp is named after a hash of pyproject.toml: a changed pyproject
# reinstalls, an unchanged one (whatever its mtime) reuses the venv as it is.
PYPROJECT_HASH := $(shell $(PYTHON) -c "import hashlib; print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:16])")
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
SMOKE_DIR := _build/smoke
EXEC_DIR  := _build/executed

# Kernels: the notebooks ask for kernel "python3". `make venv` installs a
# "python3" kernelspec into the venv (absolute path to .venv/bin/python), and
# JUPYTER_PREFER_ENV_PATH makes it win over any user-level "python3" kernelspec.
export JUPYTER_PREFER_ENV_PATH := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

PAPERMILL_ARGS := --kernel python3 --cwd notebooks --no-progress-bar

.PHONY: help venv test test-unit test-notebooks test-clean-book test-smoke test-book test-browser chapters book clean distclean

help:
	@echo "make book            execute notebooks/*.ipynb in place (profile cpu) and build _build/html"
	@echo "make chapters        execute notebooks in place as book does, without the build (NOTEBOOKS=... picks)"
	@echo "make test            venv, then test-unit, test-notebooks, test-smoke, test-book, test-browser"
	@echo "make venv            create .venv and install -e '.[book,test]' (once per pyproject.toml)"
	@echo "make test-unit       pytest -q tests"
	@echo "make test-notebooks  re-run the committed notebooks against results/ (nbval-lax, EMKD_REQUIRE_CACHED=1)"
	@echo "make test-smoke      run every notebook with -p profile smoke into $(SMOKE_DIR)/"
	@echo "make test-book       jupyter-book build -W -n --keep-going into _build/test-book"
	@echo "make test-browser    open every page of _build/test-book in headless chromium; screenshots in _build/browser"
	@echo "make clean           remove _build/ and caches (distclean also removes .venv)"

venv: $(STAMP)

$(STAMP):
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --progress-bar off $(PIP_ARGS) -e '.[book,test]'
	$(PY) -m ipykernel install --sys-prefix --name python3
	@rm -f $(VENV)/.installed-*
	@touch $@

test: venv
	$(MAKE) test-unit
	$(MAKE) test-notebooks
	$(MAKE) test-clean-book
	$(MAKE) test-smoke
	$(MAKE) test-book
	$(MAKE) test-browser

test-unit: venv
	$(PYTEST) -q tests

# Figures go to a scratch folder: re-executing a chapter must never rewrite
# the committed figures (with data missing it would save empty plots).
test-notebooks: venv
	EMKD_REQUIRE_CACHED=1 EMKD_FIGURES_DIR=$(abspath _build/nbval-figures) \
	  $(PYTEST) -q --nbval-lax --nbval-current-env notebooks/

# The smoke runs' checkpoints, weights and feature caches go to a scratch
# cache too: they are throwaway runs, and the user's cache keeps only real ones
# (a smoke run stopped at its tiny epoch cap would otherwise leave its last
# checkpoint in checkpoints/capped/ for a higher cap to continue).
test-smoke: venv
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks in notebooks/" >&2; exit 1; }
	rm -rf $(SMOKE_DIR)
	mkdir -p $(SMOKE_DIR)/results
	@for nb in $(NOTEBOOKS); do \
	  out=$(SMOKE_DIR)/$$(basename $$nb); \
	  echo "smoke: $$nb -> $$out"; \
	  env -u EMKD_REQUIRE_CACHED EMKD_ALLOW_DIRTY=1 EMKD_RESULTS_DIR=$(abspath $(SMOKE_DIR)/results) \
	    EMKD_CACHE_DIR=$(abspath $(SMOKE_DIR)/cache) \
	    EMKD_FIGURES_DIR=$(abspath $(SMOKE_DIR)/figures) \
	    $(PAPERMILL) "$$nb" "$$out" -p profile smoke $(PAPERMILL_ARGS); \
	done
	@echo "smoke: $(words $(NOTEBOOKS)) notebook(s) ran"

test-book: venv
	rm -rf _build/test-book
	$(JB) build . -W -n --keep-going --path-output _build/test-book
	@echo "test-book: built _build/test-book/_build/html without warnings"

# Every page of the test-book build in headless chromium (Debian's chromium and
# chromium-driver): error outputs, broken images, untypeset math, content wider
# than the page. Screenshots go to _build/browser/.
test-browser: venv
	@test -d _build/test-book/_build/html || $(MAKE) test-book
	$(PY) scripts/browser_check.py _build/test-book/_build/html --screenshots _build/browser

# `make book` must leave the tree clean when results are unchanged: execute
# every chapter exactly as `book` does, into a scratch folder, and compare the
# cleaned notebooks and their figures byte for byte with the committed ones.
CLEAN_DIR := _build/clean-check
test-clean-book: venv
	rm -rf $(CLEAN_DIR) && mkdir -p $(CLEAN_DIR)/figures
	@fail=0; for nb in $(NOTEBOOKS); do \
	  out=$(CLEAN_DIR)/$$(basename $$nb); \
	  EMKD_REQUIRE_CACHED=1 EMKD_FIGURES_DIR=$(abspath $(CLEAN_DIR)/figures) \
	    $(PAPERMILL) "$$nb" "$$out" -p profile cpu $(PAPERMILL_ARGS) >/dev/null 2>&1 \
	    || { echo "test-clean-book: $$nb failed to execute (see $$out)" >&2; exit 1; }; \
	  $(PY) scripts/clean_notebook.py "$$out" >/dev/null; \
	  cmp -s "$$nb" "$$out" || { echo "test-clean-book: make book would rewrite $$nb (diff $$nb $$out)" >&2; fail=1; }; \
	done; \
	for fig in $(CLEAN_DIR)/figures/*.png; do \
	  cmp -s "$$fig" notebooks/figures/$$(basename $$fig) \
	    || { echo "test-clean-book: make book would rewrite notebooks/figures/$$(basename $$fig)" >&2; fail=1; }; \
	done; \
	test $$fail -eq 0 && echo "test-clean-book: executing the book leaves the tree as committed"

# After a campaign's results land, only the chapters that show them need to run
# again, e.g. against a copy of the committed store while runs keep writing:
#   cp -r results /tmp/snap && EMKD_RESULTS_DIR=/tmp/snap make chapters NOTEBOOKS="notebooks/05_*.ipynb"
chapters: venv
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks in notebooks/" >&2; exit 1; }
	mkdir -p $(EXEC_DIR)
	@for nb in $(NOTEBOOKS); do \
	  out=$(EXEC_DIR)/$$(basename $$nb); \
	  echo "chapters: executing $$nb (profile cpu)"; \
	  $(PAPERMILL) "$$nb" "$$out" -p profile cpu $(PAPERMILL_ARGS) \
	    || { echo "chapters: $$nb failed; the executed copy is $$out" >&2; exit 1; }; \
	  $(PY) scripts/clean_notebook.py "$$out"; \
	  cp "$$out" "$$nb"; \
	done

book: chapters
	$(JB) build . -W -n --keep-going
	@echo "book: open _build/html/index.html"

clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
