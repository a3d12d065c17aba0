# imageprep.vm — one command per job. See README.md and docs/development.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

REPO := $(abspath .)
VENV ?= $(REPO)/.venv
CACHE ?= $(REPO)/.cache
export IMAGEPREP_VENV := $(VENV)
export IMAGEPREP_TEST_CACHE := $(CACHE)/targets
# ansible-test needs the collection at .../ansible_collections/imageprep/vm inside a git work tree
COLLECTIONS := $(CACHE)/collections
COLL := $(COLLECTIONS)/ansible_collections/imageprep/vm
export IMAGEPREP_TEST_TARGETS := $(COLL)/tests/targets
PYTHON_VERSION := 3.12
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
# The Azure tests answer from the official Azure REST API examples, kept outside the repository next to
# it (or next to the repository this one was cloned from); IMAGEPREP_AZURE_REST_EXAMPLES overrides.
ORIGIN := $(shell git -C $(REPO) config --get remote.origin.url 2>/dev/null)
IMAGEPREP_AZURE_REST_EXAMPLES ?= $(abspath $(patsubst %/README.md,%,$(firstword $(wildcard \
	$(REPO)/../shared/azure-rest-examples/README.md $(ORIGIN)/../shared/azure-rest-examples/README.md))))
export IMAGEPREP_AZURE_REST_EXAMPLES
export IMAGEPREP_AZURITE ?= $(CACHE)/npm/node_modules/.bin/azurite-blob
export ANSIBLE_NOCOLOR := 1
export NO_COLOR := 1

LAYERS := sanity lint unit build azure integration molecule e2e

.PHONY: help setup test demo sync $(LAYERS)

help:
	@echo "make test         run every test layer ($(LAYERS)), with set-up"
	@echo "make demo         the golden-image pipeline on a demo VM"
	@echo "make setup        install Debian packages and the pinned toolchain (.venv)"
	@echo "make <layer>      one layer alone: $(LAYERS)"

setup:
	@tests/tooling/setup.sh

test: setup
	@tests/tooling/run_layers.sh $(LAYERS)

demo: setup sync
	@tests/tooling/demo.sh $(COLL)

# A copy of the work tree (with .git, so ansible-test sees tracked and new files) where
# ansible-test and the collection loader expect it.
sync:
	@mkdir -p $(COLL)
	@rsync -a --delete --exclude=/.venv --exclude=/.cache --exclude=/tests/output $(REPO)/ $(COLL)/

sanity: setup sync
	cd $(COLL) && ansible-test sanity --venv --python $(PYTHON_VERSION) --color no

lint: setup sync
	cd $(COLL) && yamllint --strict .
	cd $(COLL) && ansible-lint --profile production
	cd $(COLL) && antsibull-docs lint-collection-docs --plugin-docs .
	cd $(COLL) && antsibull-changelog lint

unit: setup sync
	cd $(COLL) && PYTHONPATH=$(COLLECTIONS) python -m pytest -q -p no:cacheprovider tests/unit

build: setup sync
	tests/tooling/check_build.sh $(COLL) $(CACHE)/build

integration: setup sync
	tests/tooling/run_integration.sh $(COLL)

molecule: setup sync
	tests/tooling/run_molecule.sh $(COLL)

azure: setup sync
	cd $(COLL) && python -m pytest -q -p no:cacheprovider tests/azure

e2e: setup sync
	cd $(COLL) && python -m pytest -q -p no:cacheprovider tests/e2e
