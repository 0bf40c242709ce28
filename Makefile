# The README's two commands. Each works on a fresh machine with only python3:
#   make demo   a real local fleet (5 sshd hosts in network namespaces), a real Redis cluster, real agents
#   make test   unit tests, then the marked suite against a real testbed
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit lint fleet-test system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

# openssh-server (the testbed's hosts), iproute2 (namespaces), nftables (`testbed.up --nat`), redis-tools and wrk (the peers in `inv perf`),
# golang-go and redis-server (the Go server built and Debian's Redis 7 pushed by the server-files tests).
# chromium (the tests open `inv report --html` in it, headless). prometheus for its promtool (the tests run
# `promtool check metrics` on export/metrics.prom and load it into a TSDB). debootstrap, qemu-user-static and
# binfmt-support build the testbed's images (`inv testbed.up --image`), arm64 ones under qemu through
# binfmt_misc, registered here (idempotent; needs root, like the testbed); qemu-user-static also runs the
# redis-server built from source for arm64 hosts in its test.
system-deps:
	@$(PYTHON) -c 'import sys; sys.exit(0) if sys.version_info >= (3, 11) else sys.exit("fleetbench needs python3 >= 3.11 on the controller")'
	@missing=""; \
	[ -x /usr/sbin/sshd ] || missing="$$missing openssh-server"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing="$$missing nftables"; \
	command -v ssh-keygen >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	command -v redis-benchmark >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	[ -x /usr/bin/go ] || missing="$$missing golang-go"; \
	[ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	[ -x /usr/sbin/debootstrap ] || missing="$$missing debootstrap"; \
	[ -x /usr/bin/qemu-aarch64-static ] || missing="$$missing qemu-user-static"; \
	[ -x /usr/sbin/update-binfmts ] || missing="$$missing binfmt-support"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing. Install them as root, e.g.: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi
	@if [ "$$(id -u)" = 0 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then \
	  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
	  update-binfmts --enable qemu-aarch64; \
	fi

demo: system-deps $(STAMP)
	$(VENV)/bin/inv demo

test: system-deps $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m 'not fleet' tests

clean:
	rm -rf $(VENV) .fleetbench runs

# ruff (pyflakes, pycodestyle, isort, pyupgrade, bugbear) on the tree; mypy on the controller for
# its Python (3.11) and on what runs on the hosts (the agent and its wire) for theirs (3.9).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --python-version 3.9 bench/agent bench/wire bench/__init__.py
