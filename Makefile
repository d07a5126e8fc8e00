# Self-documenting: `make help` lists the targets.
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
HELM := helm/bin/helm

.PHONY: help setup run test test-fast lint format train helm bench bench-tracing loadtest proto

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install redis-server, the virtualenv and pinned packages (idempotent)
	@scripts/setup.sh

run: setup ## start Redis + Triton + gateway with demo features on http://127.0.0.1:8080 (ARGS=--no-auth: no API keys)
	$(PY) -m devstack $(ARGS)

$(HELM):
	@scripts/install_helm.sh

helm: $(HELM) ## fetch the pinned helm binary into helm/bin/

test: setup $(HELM) ## the whole suite: unit, integration (real redis + triton), helm chart
	$(PY) -m pytest

test-fast: setup ## unit tests only
	$(PY) -m pytest tests/unit

lint: setup ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy gateway devstack

format: setup ## apply ruff formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup ## side-by-side benchmark (direct Triton, gateway miss/hit, reference gateway) → docs/benchmark.md
	$(VENV)/bin/pip install -q -e ".[bench]"
	$(PY) -m benchmarks.run

loadtest: setup ## Locust REST + gRPC mix against `make run` with the SLO gate (ARGS: more Locust flags)
	@mkdir -p out
	GATEWAY_API_KEY=$${GATEWAY_API_KEY:-$$(cat .run/devstack/api-key 2>/dev/null)} \
	$(VENV)/bin/locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 1m \
		--host http://127.0.0.1:8080 --csv out/loadtest --html out/loadtest.html --only-summary $(ARGS)

bench-tracing: setup ## tracing off vs 5% vs 100% sampled: req/s and CPU ms/request (docs/observability.md)
	$(PY) -m benchmarks.tracing_overhead

train: setup ## regenerate the model artifact and demo data (deterministic)
	$(PY) -m training.train_fraud_scorer

proto: setup ## regenerate gateway/v1/_generated from gateway/v1/gateway.proto (grpcio-tools)
	$(PY) -m gateway.v1.codegen
