# Two commands for a new user: `make demo` and `make test`. Both create .venv and install into it.
# TORCH pins the local CPU wheel on the project machines; on a CUDA host use e.g.
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
TORCH  ?= torch==2.13.0
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages (command:package): nginx is the coordinator's public proxy, tcpdump records the
# wire test, ssh-keygen cross-checks key fingerprints, systemd-analyze verifies the systemd units in
# deploy/systemd, tesseract (with its English data) reads burned-in text for 'insite site deid', chromium
# runs the dashboard's browser tests.
# Installs only what is missing, only as root with apt-get; otherwise it names what to install and
# goes on (the tests that need them then skip, saying why).
SYSTEM_PACKAGES := nginx:nginx-light tcpdump:tcpdump ssh-keygen:openssh-client systemd-analyze:systemd tesseract:tesseract-ocr chromium:chromium

system-deps:
	@PATH="$$PATH:/usr/sbin:/sbin"; missing=""; \
	for pair in $(SYSTEM_PACKAGES); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "note: not installed:$$missing (as root: apt-get install$$missing)"; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/insite demo

# Lint first (a minute): ruff's rules and formatting, and mypy over every package (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint system-deps
	$(BIN)/python -m pytest

test-slow: $(STAMP) system-deps
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python -m bench.round_floor
	$(BIN)/python -m bench.round_overhead
	$(BIN)/python -m bench.training_throughput

clean:
	rm -rf $(VENV) insite-demo .pytest_cache
