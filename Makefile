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

.PHONY: help deploy undeploy status test lint unit e2e venv host-packages clean-venv terraform-check

help:
	@echo "make deploy     deploy the default model on this machine (installs what is missing)"
	@echo "make test       lint + unit tests + end-to-end deploy test"
	@echo "make undeploy   remove the default model (MODEL=name for another)"
	@echo "make status     what is deployed here"
	@echo "make terraform-check  offline Terraform checks: fmt, validate, terraform test, checkov"

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
	$(VENV)/bin/ruff check scripts tests bench
	$(VENV)/bin/ruff format --check scripts tests bench
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/python -m llmfleet.devtools argspecs --check
	$(VENV)/bin/python -m llmfleet.devtools gpu-table --check
	$(VENV)/bin/ansible-playbook --syntax-check -i inventories/local/hosts.yml deploy-model.yml undeploy-model.yml upgrade-gpu-driver.yml

# make has installed the host tools these tests run (host-packages), so a missing one fails them
# instead of skipping them (tests/hosttools.py).
unit: $(STAMP) host-packages terraform-check
	LLMFLEET_REQUIRE_HOST_TOOLS=1 $(VENV)/bin/python -m pytest -m "not e2e"

e2e: $(STAMP) host-packages
	$(VENV)/bin/python -m pytest -m e2e

test: lint unit molecule e2e

# Terraform, offline: providers come only from the filesystem mirror named in terraform/terraform.tfrc
# (hashicorp/aws 5.100.0 in /opt/tf-plugins). checkov lives in its own venv: it has many dependencies
# that must not meet the project's. Every root and module directory is initialised without a backend,
# validated and unit-tested with `terraform test` (mock provider, plan only); checkov must report zero
# failed checks (each skip carries its reason inline, see tests/test_terraform.py).
TERRAFORM := TF_CLI_CONFIG_FILE=$(CURDIR)/terraform/terraform.tfrc TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 terraform
TF_DIRS := $(patsubst %/,%,$(sort $(dir $(wildcard terraform/modules/*/main.tf)))) terraform/envs/example
TF_DIR_CHECKS := $(addprefix tf-dir/,$(TF_DIRS))
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check 'checkov==$(CHECKOV_VERSION)' 2>&1 \
	  | { grep -v "^WARNING: Location 'file:" || true; }
	touch $@

# The directories are checked three at a time (each `terraform test` run starts the provider), with
# each directory's output kept together.
terraform-check: $(CHECKOV_STAMP)
	$(TERRAFORM) fmt -check -recursive -diff terraform
	$(MAKE) --no-print-directory -j3 --output-sync=target $(TF_DIR_CHECKS)
	$(CHECKOV_VENV)/bin/checkov -d terraform --framework terraform --skip-download --quiet --compact

.PHONY: $(TF_DIR_CHECKS)
$(TF_DIR_CHECKS): tf-dir/%:
	@echo "== $*: init, validate, test"
	@$(TERRAFORM) -chdir=$* init -backend=false -input=false -no-color >/dev/null
	@$(TERRAFORM) -chdir=$* validate -no-color
	@$(TERRAFORM) -chdir=$* test -no-color | { grep -E '^(Success|Failure)|fail|Error' || true; }

clean-venv:
	rm -rf $(VENV)

# Molecule: the scenarios of the GPU-node roles (role:scenario), each on a podman test host (tests/hosts, systemd
# as PID 1). nvidia_driver's `gpu` scenario (delegated driver, a real GPU host) is not in this list: see
# docs/gpu-nodes.md for how to run it there.
# molecule, its podman driver, testinfra and ansible-lint live in their own venv (the `molecule` extra), so
# the project venv stays lean; the collections come from the `ansible` wheel, offline (tests/molecule).
# Downloaded .debs are cached per scenario under /var/tmp/llmfleet-molecule-apt.
MOLECULE_VENV := .venv-molecule
MOLECULE_ANSIBLE := 12.3.0
MOLECULE_STAMP := $(MOLECULE_VENV)/.installed
MOLECULE_ROLES := container_runtime nvidia_container_toolkit nvidia_driver vllm_container model_weights host_firewall
MOLECULE_SCENARIOS := container_runtime:default nvidia_container_toolkit:default nvidia_driver:default \
  nvidia_driver:cuda_repo vllm_container:default model_weights:default host_firewall:default
MOLECULE_ENV := CONTAINERS_CONF=$(CURDIR)/tests/hosts/containers.conf \
  ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/$(MOLECULE_VENV)/collections ANSIBLE_ROLES_PATH=$(CURDIR)/ansible/roles \
  PATH=$(CURDIR)/$(MOLECULE_VENV)/bin:$$PATH

$(MOLECULE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MOLECULE_VENV)
	$(MOLECULE_VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[molecule]' 2>&1 \
	  | { grep -v "^WARNING: Location 'file:" || true; }
	tests/molecule/install-collections.sh $(MOLECULE_VENV)/bin/python $(MOLECULE_VENV)/collections $(MOLECULE_ANSIBLE)
	touch $@

.PHONY: molecule ansible-lint
molecule: $(MOLECULE_STAMP) host-packages ansible-lint
	CONTAINERS_CONF=tests/hosts/containers.conf tests/hosts/build-image.sh
	mkdir -p $(addprefix /var/tmp/llmfleet-molecule-apt/,$(MOLECULE_ROLES) nvidia_driver-cuda_repo)
	for rs in $(MOLECULE_SCENARIOS); do \
	  role=$${rs%%:*}; scenario=$${rs#*:}; \
	  echo "== molecule: $$role ($$scenario)"; \
	  (cd ansible/roles/$$role && $(MOLECULE_ENV) molecule test -s $$scenario) || exit 1; \
	done

# Every role (their molecule scenarios included) and every playbook at the root.
ansible-lint: $(MOLECULE_STAMP)
	$(MOLECULE_ENV) ansible-lint -c tests/molecule/ansible-lint.yml --project-dir . \
	  $(sort $(wildcard ansible/roles/*)) deploy-model.yml undeploy-model.yml upgrade-gpu-driver.yml
