# Two commands do all the set-up on a fresh Debian machine:
#   make run    the seed's network: 5 Prosody servers, dmuc-master, 3 dmuc-slaves (SQLite)
#   make test   the whole test suite (unit + integration against real Prosody)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run run-single test unit lint bench deps venv clean

run: deps venv
	$(BIN)/python -m testbed.demo_network

# One Prosody with the master only.
run-single: deps venv
	$(BIN)/python -m testbed.demo

test: deps venv
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

lint: venv
	$(BIN)/ruff check dmuc tests benchmarks twisted testbed

bench: deps venv
	$(BIN)/python -m benchmarks.broadcast
	$(BIN)/python -m benchmarks.slave_fanout

# Debian packages: Prosody (the XMPP server we attach to) and dnsmasq (test DNS).
deps:
	@command -v prosody >/dev/null && command -v dnsmasq >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prosody dnsmasq-base; }

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

clean:
	rm -rf $(VENV) run build *.egg-info
