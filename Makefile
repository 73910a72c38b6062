# make demo: set up .venv and run the main job on the bundled example.
# make test: set up .venv with the dev extras and run the test suite (what CI runs).
# torch is installed first, pinned: an unpinned torch would pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test pytest lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

EXAMPLE := examples/jpeg_pipeline.py
demo: $(VENV)/.installed
	$(BIN)/python benchmarks/loader_vs_torch.py --quick
	$(BIN)/loadtune profile $(EXAMPLE):loader --step $(EXAMPLE):train_step --batches 100 --out loadtune-out
	$(BIN)/loadtune autotune $(EXAMPLE):loader --step $(EXAMPLE):train_step --trials 10 \
		--time-budget 120 --storage none --out loadtune-out/tuned.json
	@# profile writes report.html and autotune tune.html: one folder keeps both
	@for f in report.html tune.html tuned.json; do \
		test -f loadtune-out/$$f || { echo "make demo: loadtune-out/$$f is missing" >&2; exit 1; }; \
	done
	@echo "profile report: loadtune-out/report.html"
	@echo "tune report:    loadtune-out/tune.html"
	@echo "tuned config:   loadtune-out/tuned.json"

lint: $(VENV)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# PYTEST_ARGS lets a test of this target point pytest elsewhere. pytest's exit status passes
# through: a failure is non-zero, and so is "no tests collected" (exit 5).
PYTEST_ARGS ?= -q
test: $(VENV)/.installed lint pytest

pytest: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/loader_vs_torch.py

clean:
	rm -rf $(VENV) build *.egg-info
