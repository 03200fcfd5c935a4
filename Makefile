# funnelcast: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output

.PHONY: demo test bench quality lock clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/funnelcast demo --out $(DEMO_DIR)

test: $(STAMP)
	bash .ci/pytest.sh

bench: $(STAMP)
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_serving.py
	$(BIN)/python bench/cdnow.py
	$(BIN)/python bench/value_at_risk.py

# The quality suite (not part of `make test`): the product beside independent baselines on several
# unlike data sets; writes quality-results/quality.json. QUALITY_ARGS="--quick --datasets cdnow" etc.
quality: $(STAMP)
	$(BIN)/python -m quality.run $(QUALITY_ARGS)

# Re-pin every dependency after changing pyproject.toml.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^funnelcast' > requirements.lock

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
