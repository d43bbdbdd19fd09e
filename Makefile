# make run: set up .venv and start the service on the embedded defaults (SQLite, local folder,
#           a Celery worker on a server-less broker) on http://$(HOST):$(PORT)
#           (make run PORT=8102 for another port).
# make test: set up .venv, run the linters (import contracts, ruff, mypy), then the tests
#            (installing Debian's chromium and chromium-driver first when they are missing:
#            the front door's tests drive a real browser).
# make screenshots: regenerate docs/screenshots/*.png (the front door, a job, its report).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test lint browser screenshots bench example clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ./client -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/harden serve --embedded --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check core app worker cli client tests bench docs/screenshots.py
	$(BIN)/ruff format --check core app worker cli client tests bench docs/screenshots.py
	$(BIN)/mypy core app worker cli client/harden_client

# Debian's browser and its driver (tests/integration/browser.py drives them; no browser download).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

test: lint browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

screenshots: $(STAMP) browser
	PYTHONPATH=. $(BIN)/python docs/screenshots.py

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ./client -e '.[dev,bench]'
	$(BIN)/python bench/distill_overhead.py

example: $(STAMP)
	$(BIN)/python examples/train_mnist_teacher.py --out examples/mnist_teacher.pt
	$(BIN)/harden run examples/mnist_teacher.pt --dataset builtin:mnist --out runs/mnist

clean:
	rm -rf $(VENV) runs var
