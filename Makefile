# cloudplow: `make run` (demo when there is no config.yaml) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install promtool compose-tools downloaders run test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
		(apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null)
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The tests check the rendered /metrics with promtool, from Debian's prometheus
# package. On a systemd host the package also starts a server; stop it, the
# tests start their own on 127.0.0.1.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null && \
		{ systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
	}

# tests/test_compose.py lints docker/entrypoint.sh with shellcheck and checks
# alertmanager/alertmanager.yml with amtool (Debian's prometheus-alertmanager;
# like prometheus above, stop the server a systemd host would start).
compose-tools:
	@command -v shellcheck >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			shellcheck prometheus-alertmanager >/dev/null && \
		{ systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true; }; \
	}

# tests/test_downloaders.py starts the real SABnzbd, NZBGet and qBittorrent
# daemons. sabnzbdplus is in Debian's contrib and depends on unrar from
# non-free, so both components are enabled first (deb822 or one-line sources).
# The packages ship no enabled service; the tests start their own on 127.0.0.1.
downloaders:
	@command -v sabnzbdplus >/dev/null 2>&1 && command -v nzbget >/dev/null 2>&1 && \
	command -v qbittorrent-nox >/dev/null 2>&1 || { \
		for sources in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do \
			[ -f $$sources ] || continue; \
			sed -i -E -e '/^Components:/{/contrib/!s/$$/ contrib/;/non-free( |$$)/!s/$$/ non-free/}' \
				-e '/^deb .*debian/{/ contrib/!s/$$/ contrib/;/ non-free( |$$)/!s/$$/ non-free/}' $$sources; \
		done; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			-o DPkg::Lock::Timeout=600 sabnzbdplus nzbget qbittorrent-nox >/dev/null && \
		{ systemctl disable --now sabnzbdplus >/dev/null 2>&1 || true; }; \
	}

run: install
	@if [ -f config.yaml ] || [ -n "$$CLOUDPLOW_CONFIG" ]; then \
		exec $(BIN)/cloudplow run; \
	else \
		exec $(BIN)/python -m cloudplow.demo; \
	fi

lint: install
	$(BIN)/ruff check cloudplow tests bench
	$(BIN)/ruff format --check cloudplow tests bench
	$(BIN)/mypy

test: install lint promtool compose-tools downloaders
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
