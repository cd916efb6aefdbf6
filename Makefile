# Serial Console Lab -- developer and CI entry points. `make` alone lists the targets.
#
# `make setup` is idempotent (scripts/setup.sh): the first run installs Debian packages, starts
# libvirt, builds .venv and the tiny image; later runs finish in a few seconds.

PYTHON ?= python3
VENV ?= .venv
# Extra arguments for pytest, e.g. `make unit PYTEST_ARGS='-k names -x'`.
PYTEST_ARGS ?=

export PYTHON VENV
# A normal user's PATH on Debian lacks /usr/sbin, where the image builder's mkfs.ext4 lives.
ifeq ($(findstring /usr/sbin,$(PATH)),)
export PATH := $(PATH):/usr/sbin:/sbin
endif

BIN := $(VENV)/bin
# Every bench/*.py but benchlab.py, the library they share.
BENCHES := $(sort $(filter-out bench/benchlab.py,$(wildcard bench/*.py)))
# Only the directories that exist: git does not keep empty ones, so a fresh clone may lack
# bench/ or tests/ (ruff fails on a missing path).
LINT_DIRS := $(wildcard lab tests bench)

.DEFAULT_GOAL := help
.PHONY: help setup run test lint unit integration bench bench-check clean

help: ## List the targets
	@echo "Serial Console Lab -- make targets:"
	@grep -E '^[a-z][a-z_-]*:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'
	@echo "Variables: PYTHON=$(PYTHON) VENV=$(VENV) PYTEST_ARGS=$(PYTEST_ARGS)"

setup: ## Install everything (apt packages, libvirt daemons, .venv, tiny image); idempotent
	@bash scripts/setup.sh

run: setup ## Setup, then serve the demo lab (examples/demo.yaml) in the foreground
	$(BIN)/lab serve --lab examples/demo.yaml

test: setup ## Setup, lint, then the whole pytest suite (what CI runs)
	@$(MAKE) --no-print-directory lint
	@rc=0; $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); that is a failure"; fi; \
	exit $$rc

# The targets below use the existing venv; without one they run `make setup` first.
$(BIN)/lab:
	@echo "no $(VENV) yet: running make setup first"
	@$(MAKE) --no-print-directory setup

lint: $(BIN)/lab ## ruff check (lab tests bench) and mypy (strict, on lab)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/mypy

unit: $(BIN)/lab ## Unit tests only (tests/unit)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(BIN)/lab ## Integration tests (boot real guests under libvirt)
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

bench: $(BIN)/lab ## Run each bench/*.py with the venv's python: every figure and ratio
	@if [ -z "$(BENCHES)" ]; then echo "make bench: no bench/*.py yet"; fi
	@set -e; for f in $(BENCHES); do echo "== $$f"; $(BIN)/python $$f; done

# Every bench, each with --check: a missed target makes that bench exit 1; the others still run,
# and the target fails at the end naming them.
bench-check: $(BIN)/lab ## Run each bench/*.py with --check; fails if any target is missed
	@failed=""; for f in $(BENCHES); do echo "== $$f --check"; \
	  $(BIN)/python $$f --check || failed="$$failed $$f"; done; \
	if [ -n "$$failed" ]; then echo "make bench-check: targets missed in:$$failed"; exit 1; fi; \
	echo "make bench-check: every target met"

clean: ## Remove .venv and caches (not the lab's data dir, ~/.local/share/serial-console-lab)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
