# Two commands do all the set-up on a fresh Debian machine:
#   make demo   the seed's network: 5 Prosody servers, dmuc-master, 3 dmuc-slaves (SQLite),
#               the seed's story played on it (with a netsplit), and on mod_muc: what every
#               user received and the s2s cost, side by side
#   make test   the whole test suite (unit + integration against real Prosody); make faults
#               every fault test, short and long; make soak 30 random faults
# make run brings up the same network without the story; make bench compares dmuc with
# Prosody's mod_muc on it (docs/benchmarks.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo run run-single test unit lint bench bench-daemon soak faults deps venv clean man

demo: deps venv
	$(BIN)/python -m testbed.demo_story

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

# The man pages (docs/man/*.8) from their sources (docs/man/*.8.md); installed by pip.
man: venv
	$(BIN)/python docs/man/build_man.py

# Every fault test, short and long, for every kind of fault (testbed/faults.py FAULT_KINDS),
# and the 60 s split; `make test` runs the short ones and one long one per class of fault.
faults: deps venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -s -m integration tests/integration/test_faults.py

# A long soak: SOAK_FAULTS random faults under continuous traffic, drawn from every kind
# of fault (a fresh seed each run, printed; replay one with SOAK_SEED=n), judged as the
# fault tests. The test suite runs a short one (one fault of each class, a fresh seed).
SOAK_FAULTS ?= 30
SOAK_SEED ?= $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
soak: deps venv
	DMUC_SOAK_FAULTS=$(SOAK_FAULTS) DMUC_SOAK_SEED=$(SOAK_SEED) \
	  $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/integration/test_soak.py

# dmuc against Prosody's mod_muc on the same five-server network (N=300 and N=1000
# occupants on K=3 users' servers); prints the table and writes it into docs/benchmarks.md
BENCH_ARGS ?=
bench: deps venv
	$(BIN)/python -m benchmarks.realnet $(BENCH_ARGS)

# the older single-daemon benchmarks (a daemon against a fake Prosody)
bench-daemon: deps venv
	$(BIN)/python -m benchmarks.broadcast
	$(BIN)/python -m benchmarks.slave_fanout
	$(BIN)/python -m benchmarks.joins --occupants 10000 --daemon --no-direct

# Debian packages: Prosody (the XMPP server we attach to), dnsmasq (test DNS),
# lua-dbi-sqlite3 (Prosody's SQL storage, for the import test), man-db (man page check)
# and PostgreSQL (the tests initdb throwaway servers; the package's own cluster is not
# needed, so it is told not to create one).
NO_MAIN_CLUSTER := /etc/postgresql-common/createcluster.d/dmuc-no-main-cluster.conf
# env, not a variable before sudo: sudo would drop it
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
deps:
	@command -v prosody >/dev/null && command -v dnsmasq >/dev/null \
	  && dpkg -s lua-dbi-sqlite3 >/dev/null 2>&1 && command -v man >/dev/null || { \
	  $(APT) update -qq && $(APT) install -y -qq prosody dnsmasq-base lua-dbi-sqlite3 man-db; }
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  $(SUDO) mkdir -p $(dir $(NO_MAIN_CLUSTER)) && \
	  echo "create_main_cluster = false" | $(SUDO) tee $(NO_MAIN_CLUSTER) >/dev/null && \
	  $(APT) update -qq && $(APT) install -y -qq postgresql; }

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

clean:
	rm -rf $(VENV) run build *.egg-info
