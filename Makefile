# Two commands for a newcomer: `make round` and `make test`. Each sets up what it
# needs first (Debian packages, .venv, torch pinned, the project) and skips what is done.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
APT_PACKAGES := espeak-ng flite libsndfile1 chromium chromium-driver
APT_STAMP := $(VENV)/.apt-done
INSTALL_STAMP := $(VENV)/.installed
ROUND_DIR ?= rounds/tiny
CONFIG ?= configs/tiny.yaml

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup round test clean server server-stop

setup: $(INSTALL_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(APT_STAMP): | $(PY)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@touch $@

# torch first, from the local CPU wheel; everything after under constraints.txt.
$(INSTALL_STAMP): pyproject.toml constraints.txt $(APT_STAMP)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# muq without its declared dependencies: they are torchaudio/torchvision CUDA builds that
	# break the CPU torch; pipeline/scoring/muq_shim.py stands in for the parts muq imports.
	$(PIP) install -q -c constraints.txt --no-deps muq==0.1.0
	@touch $@

# The whole chain, lyrics to sweep; ends with the round's summary and the ablation table.
round: setup
	$(VENV)/bin/songpref round run --config $(CONFIG) --out $(ROUND_DIR)
	@cat $(ROUND_DIR)/report.md

# A long-running Prefect server on the local PostgreSQL (database songpref_prefect, created if
# missing); `export PREFECT_API_URL=...` as printed to record runs there. `make round` does not need it.
server: setup
	$(VENV)/bin/songpref server start

server-stop: setup
	$(VENV)/bin/songpref server stop

test: setup
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) rounds .pytest_cache
