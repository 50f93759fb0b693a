# Two-command set-up: `make demo` and `make test` each create .venv if it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Use the shared read-only data copies beside the checkout when they exist.
export VARBAYES_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data))
# docs/installation.md records why we stay on Material for MkDocs; no banner at every build
export NO_MKDOCS_2_WARNING ?= 1

.PHONY: demo test test-fast faults bench docs lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel first, so that no dependency ever pulls a CUDA build of torch.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/varbayes demo --out runs/demo

# pytest-xdist: one worker per core, each test file on one worker (its module-scoped fixtures
# built once; spreading single tests rebuilt them and was slower)
PYTEST := $(BIN)/python -m pytest -n auto --dist loadfile

# Everything: every accuracy test, the docs' code, the CLI end to end, the site. CI runs this.
test: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST)
	$(BIN)/mkdocs build --strict --site-dir .site
	@# the site renders offline: no script, stylesheet, image, frame or font from another host
	@grep -rlE "<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//|url\([\"']?(https?:)?//|@import|fonts\.(googleapis|gstatic)" \
		--include='*.html' --include='*.css' .site; test $$? -eq 1 || \
		(echo "the docs site loads something from the network (files above)"; false)

# The inner loop: lint and the unit tests (the ones not marked slow), in about a minute.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow"

# The long fault suite (docs/reliability.md): 200 kill -9 per backend, 100 SIGINTs, 1,000
# fuzzed files per reader; `make test` runs the quick version of the same tests.
faults: $(STAMP)
	mkdir -p runs/faults && rm -f runs/faults/report.jsonl
	VARBAYES_FAULTS_LONG=1 VARBAYES_FAULTS_REPORT=$(abspath runs/faults/report.jsonl) \
		$(PYTEST) tests/faults

bench: $(STAMP)
	$(BIN)/python -m benchmarks all --json runs/bench/bench.json

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir .site

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .site runs .pytest_cache
