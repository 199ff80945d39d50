# The two commands the README promises:
#   make deploy   set up what is missing, then deploy the default model on this machine
#   make test     lint, unit tests, and the end-to-end deploy test (real vLLM, real HAProxy)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
MODEL ?= $(shell $(VENV)/bin/llmfleet catalog list --json 2>/dev/null | $(VENV)/bin/python -c 'import json,sys; print(json.load(sys.stdin)["default_model"])')
PLAYBOOK := $(VENV)/bin/ansible-playbook -i inventories/local/hosts.yml
STAMP := $(VENV)/.installed

.PHONY: help deploy undeploy status test lint unit e2e venv host-packages clean-venv

help:
	@echo "make deploy     deploy the default model on this machine (installs what is missing)"
	@echo "make test       lint + unit tests + end-to-end deploy test"
	@echo "make undeploy   remove the default model (MODEL=name for another)"
	@echo "make status     what is deployed here"

# The project venv: llmfleet (editable), ansible-core, and the test tools, pinned by range.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(STAMP)

# Debian packages the tests use directly: the real HAProxy for the gateway tests, podman and
# debootstrap for the systemd test host (tests/hosts). The deploy
# playbook installs what a deployment needs itself; this only covers `make test` on a fresh machine.
HOST_PACKAGES := haproxy podman debootstrap runc
host-packages:
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

deploy: $(STAMP)
	$(PLAYBOOK) deploy-model.yml -e model=$(MODEL)

undeploy: $(STAMP)
	$(PLAYBOOK) undeploy-model.yml -e model=$(MODEL)

status: $(STAMP)
	$(VENV)/bin/llmfleet status

lint: $(STAMP)
	$(VENV)/bin/ruff check scripts tests
	$(VENV)/bin/ruff format --check scripts tests
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/python -m llmfleet.devtools argspecs --check
	$(VENV)/bin/ansible-playbook --syntax-check -i inventories/local/hosts.yml deploy-model.yml undeploy-model.yml

unit: $(STAMP) host-packages
	$(VENV)/bin/python -m pytest -m "not e2e"

e2e: $(STAMP) host-packages
	$(VENV)/bin/python -m pytest -m e2e

test: lint unit e2e

clean-venv:
	rm -rf $(VENV)
