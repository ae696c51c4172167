# The two commands of README.md: `make survey` and `make test`. Both create/reuse .venv and install everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# torch and torchvision are installed as a matched pair; override for another platform, e.g.
#   make survey TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export PATH := $(BIN):$(PATH)

.PHONY: install browser survey test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

survey: install
	$(BIN)/xaicore survey  # params checked first; dvc repro under one local Prefect server (~15 s a stage less)
	@echo ""
	@echo "Survey outputs:"
	@echo "  heatmaps  $(CURDIR)/outputs/heatmaps.zarr   (xaicore.store.open_archive)"
	@echo "  scores    $(CURDIR)/outputs/scores.zarr"
	@echo "  metrics   $(CURDIR)/outputs/metrics.json, outputs/metrics.csv"
	@echo "  tables    $(CURDIR)/outputs/tabular/features.zarr, text: outputs/text/features.zarr (open_features)"
	@echo "  figures   $(CURDIR)/outputs/figures/"
	@echo "  MLflow    sqlite:///$(CURDIR)/outputs/mlflow.db  (mlflow ui --backend-store-uri ...)"

# report.html's browser test drives Debian's chromium with chromium-driver; installed here when apt-get can (as
# root), else the test is skipped with a message saying so
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { apt-get install -y -q chromium chromium-driver >/dev/null \
	            || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; } } \
	  || echo "make: no chromium/chromedriver and no apt-get as root: the report's browser test will be skipped"

# the suite, then its host-dependence subset again under the last-bit test mode (docs/reproducibility.md): every
# conv/linear output changes in its last bits with its batch position, as on AVX-512/AMX Xeons
test: install browser
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
	XAICORE_LAST_BIT_NOISE=1 $(VENV)/bin/python -m pytest -m hostdep $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check xaicore tasks flows tests benchmarks
	$(VENV)/bin/lint-imports  # the layers of pyproject.toml [tool.importlinter]

bench: install
	$(VENV)/bin/python benchmarks/aopc.py

clean:
	rm -rf outputs .prefect .numba_cache .dvc/cache .dvc/tmp
