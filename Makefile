# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv and
# installs the project with its dev extras on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.depthkd-installed

.PHONY: install demo test test-fast lint bench multinode clean

# constraints.txt is the lock the images install from too: two installs get the same versions
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt --upgrade pip
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) pipelines/distill.py

test: $(STAMP)
	$(PY) -m pytest --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not multiproc"

# Two Ray nodes on this machine sharing only S3 (moto) and an MLflow server on PostgreSQL, with a
# worker killed mid-run; needs PostgreSQL's server binaries (`bash .ci/install-services`).
multinode: $(STAMP)
	$(PY) -m pytest -m multinode -v tests/multinode

# mypy sees the depthkd packages through a tree of links (.typecheck/, see .ci/typecheck.py)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) .ci/typecheck.py

bench: $(STAMP)
	$(VENV)/bin/depthkd bench loader --n 1000

clean:
	rm -rf .depthkd .pytest_cache .ruff_cache .typecheck
