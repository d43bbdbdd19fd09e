# make run: set up .venv and start the service on the embedded defaults (SQLite, local folder,
#           a Celery worker on a server-less broker) on http://$(HOST):$(PORT)
#           (make run PORT=8102 for another port).
# make test: set up .venv, run the linters (import contracts, ruff, mypy), then the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test lint bench example clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ./client -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/harden serve --embedded --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check core app worker cli client tests bench
	$(BIN)/ruff format --check core app worker cli client tests bench
	$(BIN)/mypy core app worker cli client/harden_client

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ./client -e '.[dev,bench]'
	$(BIN)/python bench/distill_overhead.py

example: $(STAMP)
	$(BIN)/python examples/train_mnist_teacher.py --out examples/mnist_teacher.pt
	$(BIN)/harden run examples/mnist_teacher.pt --dataset builtin:mnist --out runs/mnist

clean:
	rm -rf $(VENV) runs var
