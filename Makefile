# Woo Companion. The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
# axe-core (npm, pinned) for the console's accessibility checks in tests/browser; kept inside
# $(VENV) so it is git-ignored and `make clean` removes it.
AXE_VERSION ?= 4.10.3
AXE_DIR := $(VENV)/axe
AXE_STAMP := $(AXE_DIR)/.installed-$(AXE_VERSION)

.PHONY: run demo test axe test-unit test-integration test-wire test-system venv up down logs docker-check bench bench-webhooks bench-segmentation bench-loyalty bench-notifications bench-cluster clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Without npm the accessibility checks fail and say so (.ci/run installs npm where missing).
$(AXE_STAMP): $(STAMP)
	@if command -v npm >/dev/null 2>&1; then \
	  { npm install --no-save --no-package-lock --silent --prefix $(AXE_DIR) axe-core@$(AXE_VERSION) \
	    && touch $(AXE_STAMP); } || echo "npm could not install axe-core@$(AXE_VERSION): the accessibility checks will fail"; \
	else echo "npm not found: the console's axe-core accessibility checks will fail (apt-get install npm)"; fi

axe: $(AXE_STAMP)

# The bench targets' extra packages (matplotlib for make bench's chart), on top of $(STAMP).
$(BENCH_STAMP): requirements-bench.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

## Start every service in the foreground (Ctrl-C stops them). Uses AMQP_URI, MONGO_URI,
## WEB_SERVER_ADDRESS and the other variables documented in docs/configuration.md.
run: $(STAMP)
	$(PY) -m services

## Every service against a simulated WooCommerce shop, a mail catcher and an SMS stand-in, with
## a seeded store and live orders (docs/demo.md); needs only RabbitMQ. DEMO_ARGS adds flags,
## e.g. DEMO_ARGS="--customers 50 --orders 400". Ctrl-C stops it all.
demo: $(STAMP)
	$(PY) -m demo $(DEMO_ARGS)

## Install everything and run every test (needs RabbitMQ with its management plugin).
test: $(STAMP) $(AXE_STAMP)
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

## The storage tests once more, through the real pymongo driver against the wire-protocol
## stand-in (tests/fakes/mongo_server.py); a few minutes, so not part of `make test`.
test-wire: $(STAMP)
	$(PY) -m pytest -m wire tests/unit

## Every service as its own process, 1,000 customers and 5,000 orders through webhooks, checked
## against the traffic driver's oracle (docs/testing.md).
test-system: $(STAMP)
	SYSTEM_CUSTOMERS=$${SYSTEM_CUSTOMERS:-1000} SYSTEM_ORDERS=$${SYSTEM_ORDERS:-5000} $(PY) -m pytest -s tests/system

## The whole system end to end (docs/benchmarks.md): 100 orders/s of signed webhooks for
## 60 s, a 10x burst, raw kombu beside them, per-service memory, and a 100,000-event backlog
## drained after an outage; bench/results/system.json and system.png. BENCH_ARGS adds options
## (e.g. BENCH_ARGS="--duration 10 --backlog 5000" for a quick run).
bench: $(BENCH_STAMP)
	$(PY) -m bench.system $(BENCH_ARGS)

## Webhook throughput of one customer_sync process beside a bare nameko endpoint.
bench-webhooks: $(STAMP)
	$(PY) -m bench.webhooks

## 20,000 order.placed queued ahead, drained by one loyalty process, beside an empty handler.
bench-loyalty: $(STAMP)
	$(PY) -m bench.loyalty

## A bulk send to 10,000 consenting customers through a local SMTP server, beside smtplib.
bench-notifications: $(STAMP)
	$(PY) -m bench.notifications

## recompute_store over 100,000 customers and 400,000 orders (mongomock): time and memory.
bench-segmentation: $(STAMP)
	$(PY) -m bench.segmentation

## Events through a private three-node cluster with quorum queues, beside a private single
## node with classic queues: publish rate, handlers' rate and lag (bench/results/cluster.json).
bench-cluster: $(STAMP)
	$(PY) -m bench.cluster $(BENCH_ARGS)

## Docker: build the image and start everything in the background (needs .env: copy
## .env.example and set the passwords); `make logs` follows them, `make down` stops them.
DOCKER_COMPOSE ?= docker compose

docker-check:
	@command -v docker >/dev/null 2>&1 || { echo "docker is not installed (or not on PATH): see https://docs.docker.com/engine/install/ (make run starts the services without it)"; exit 1; }
	@docker compose version >/dev/null 2>&1 || { echo "docker compose v2 is required (docker compose version failed)"; exit 1; }

up: docker-check
	@test -f .env || { echo ".env is missing: cp .env.example .env and set its passwords"; exit 1; }
	$(DOCKER_COMPOSE) up -d --build

down: docker-check
	$(DOCKER_COMPOSE) down

logs: docker-check
	$(DOCKER_COMPOSE) logs -f --tail=200

clean:
	rm -rf $(VENV)
