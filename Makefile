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

.PHONY: demo run run-single test unit lint bench bench-scale bench-scale-ci bench-catchup \
	bench-daemon soak \
	faults deps venv clean man \
	install install-deps

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

# At scale: N=1,000, 2,000 and 10,000 occupants on K=10 users' servers (12 Prosody servers),
# then bursts of 1,000 and 10,000 joins at once (through a slave, direct) with pings; dmuc
# and mod_muc side by side (mod_muc up to 2,000: its joins are quadratic); writes its
# section of docs/benchmarks.md and docs/bench/realnet-scale.json
SCALE_ARGS ?=
bench-scale: deps venv
	$(BIN)/python -m benchmarks.scale $(SCALE_ARGS)

# The same code path at CI size, as a test (K=10, small N and bursts; tests/integration/
# test_bench_scale.py, marked "scale", which `make test` leaves out)
bench-scale-ci: deps venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m scale tests/integration/test_bench_scale.py

# A client's catch-up of a room's last 1,000 messages (XEP-0313, pages of 50) through a
# slave, from the master directly and from mod_muc + mod_muc_mam: latency p50/p99, s2s
# stanzas and bytes, the slave's storage; writes its section of docs/benchmarks.md and
# docs/bench/catchup.json (issue 20)
CATCHUP_ARGS ?=
bench-catchup: deps venv
	$(BIN)/python -m benchmarks.catchup $(CATCHUP_ARGS)

# the older single-daemon benchmarks (a daemon against a fake Prosody)
bench-daemon: deps venv
	$(BIN)/python -m benchmarks.broadcast
	$(BIN)/python -m benchmarks.slave_fanout
	$(BIN)/python -m benchmarks.joins --occupants 10000 --daemon --no-direct

# The operator's install (docs/operations.md#install): a venv at PREFIX with dmuc and its
# dependencies (twistd with the two daemons' plugins, dmuc-admin), the systemd units
# (ExecStart PREFIX/bin/twistd), the dmuc system user (sysusers.d, created by
# systemd-sysusers), example configurations in /etc/dmuc (never overwritten), the docs the
# units name in /usr/share/doc/dmuc, the man pages. DESTDIR installs under another root
# (the venv then works from there only: it is for checking an install, not packaging).
PREFIX ?= /opt/dmuc
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
DOCDIR ?= /usr/share/doc/dmuc
MANDIR ?= /usr/local/share/man/man8
DESTDIR ?=
install: install-deps
	$(PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/pip install -q --disable-pip-version-check .
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR)/examples \
	  $(DESTDIR)$(MANDIR) $(DESTDIR)$(SYSCONFDIR)/dmuc
	for unit in dmuc-master dmuc-slave; do \
	  sed 's|/opt/dmuc/|$(PREFIX)/|g; s|/etc/dmuc/|$(SYSCONFDIR)/dmuc/|g' \
	    etc/systemd/$$unit.service > $(DESTDIR)$(UNITDIR)/$$unit.service && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$unit.service; done
	install -m 0644 etc/sysusers.d/dmuc.conf $(DESTDIR)$(SYSUSERSDIR)/dmuc.conf
	install -m 0644 README.md docs/operations.md docs/protocol.md docs/mod_muc-parity.md \
	  $(DESTDIR)$(DOCDIR)/
	install -m 0644 etc/dmuc-master.toml etc/dmuc-slave.toml etc/prosody/*.cfg.lua \
	  etc/prosody/modules/mod_dmuc_slave.lua etc/prosody/modules/mod_dmuc_hold.lua \
	  etc/prosody/modules/dmuc_hold.lib.lua $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 docs/man/*.8 $(DESTDIR)$(MANDIR)/
	systemd-sysusers --root=$(if $(DESTDIR),$(DESTDIR),/) $(DESTDIR)$(SYSUSERSDIR)/dmuc.conf
	for conf in dmuc-master dmuc-slave; do \
	  [ -e $(DESTDIR)$(SYSCONFDIR)/dmuc/$$conf.toml ] || install -m 0640 \
	    -g $$(awk -F: '$$1 == "dmuc" {print $$3}' $(DESTDIR)/etc/group) \
	    etc/$$conf.toml $(DESTDIR)$(SYSCONFDIR)/dmuc/$$conf.toml; done
	[ -n "$(DESTDIR)" ] || [ ! -d /run/systemd/system ] || systemctl daemon-reload

# systemd-sysusers and systemd-analyze (the Debian systemd package; it need not be PID 1)
install-deps:
	@command -v systemd-sysusers >/dev/null || { \
	  $(APT) update -qq && $(APT) install -y -qq systemd; }

# Debian packages: Prosody (the XMPP server we attach to), dnsmasq (test DNS),
# lua-dbi-sqlite3 (Prosody's SQL storage, for the import test), man-db (man page check),
# systemd (systemd-analyze and systemd-sysusers for the install test; not as PID 1)
# and PostgreSQL (the tests initdb throwaway servers; the package's own cluster is not
# needed, so it is told not to create one).
NO_MAIN_CLUSTER := /etc/postgresql-common/createcluster.d/dmuc-no-main-cluster.conf
# env, not a variable before sudo: sudo would drop it
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
deps:
	@command -v prosody >/dev/null && command -v dnsmasq >/dev/null \
	  && dpkg -s lua-dbi-sqlite3 >/dev/null 2>&1 && command -v man >/dev/null \
	  && command -v systemd-analyze >/dev/null || { \
	  $(APT) update -qq && $(APT) install -y -qq prosody dnsmasq-base lua-dbi-sqlite3 man-db \
	    systemd; }
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
