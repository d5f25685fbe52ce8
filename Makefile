# cloudplow: `make run` (demo when there is no config.yaml) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install promtool compose-tools downloaders container-tools grafana-password up run test lint bench clean

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

# tests/test_compose_stack.py builds the image and runs the compose stack with Debian's
# rootful podman and podman-compose, and the base images with mmdebstrap (see
# tests/podman_stack.py): runc for the hybrid cgroups here, aardvark-dns so the
# services find each other by name, catatonit for `init: true`.
container-tools:
	@command -v podman >/dev/null 2>&1 && command -v podman-compose >/dev/null 2>&1 && \
		command -v mmdebstrap >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 || { \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			podman podman-compose mmdebstrap runc crun netavark aardvark-dns catatonit \
			iptables uidmap >/dev/null; \
	}

# docker-compose.yml takes Grafana's admin password from .env and refuses to start
# without one. Add a random one to .env (created 0600; kept if already there).
grafana-password:
	@umask 077 && touch .env && chmod 600 .env && \
	if ! grep -q '^GRAFANA_ADMIN_PASSWORD=.' .env; then \
		if [ -s .env ] && [ -n "$$(tail -c 1 .env)" ]; then echo >> .env; fi && \
		printf 'GRAFANA_ADMIN_PASSWORD=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(24))')" >> .env && \
		echo "wrote a random Grafana admin password to .env (user admin)"; \
	fi

# The compose stack (docker-compose.yml); COMPOSE=podman-compose for podman.
COMPOSE ?= docker compose
up: grafana-password
	$(COMPOSE) up -d --build

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

test: install lint promtool compose-tools downloaders container-tools
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
