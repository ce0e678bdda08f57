# make test       set up .venv + data, then the whole test suite with nbval over every notebook
# make reproduce  set up, then run every notebook headless at the cpu profile → reports/
#                 (NOTEBOOKS=04 reruns only notebook 04)
# make lab        JupyterLab on notebooks/ with the project's kernel
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SEEDS ?= [0,1,2]
NOTEBOOKS ?= --all
# Tests write their reports and runs here, never over the committed reports/.
TEST_OUT := $(CURDIR)/build/test

.PHONY: setup data test reproduce lab notebooks lint clean

$(BIN)/vipnb: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/vipnb data

data: $(BIN)/vipnb
	@if [ ! -f $(FASHION_MNIST) ] && [ -z "$$VIPNB_FASHION_MNIST" ]; then \
	  echo "Installing Debian's dataset-fashion-mnist"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi
	@if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "$$WNSEARCHDIR" ]; then \
	  echo "Installing Debian's wordnet-base (WordNet 3.0: VIPF's semantic tree at paper)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wordnet-base; \
	fi
	$(BIN)/vipnb data fashion50 --out data/fashion50
	$(BIN)/vipnb data fashion-boxes --out data/fashion_boxes

test: setup
	rm -rf $(TEST_OUT)
	VIPNB_REPORTS=$(TEST_OUT)/reports VIPNB_RUNS=$(TEST_OUT)/runs \
	  $(BIN)/python -m pytest -q --durations=20 tests --nbval-lax notebooks/*.ipynb

reproduce: setup
	$(BIN)/vipnb run $(NOTEBOOKS) --profile cpu -p seeds='$(SEEDS)'

lab: setup
	$(BIN)/python -m ipykernel install --user --name vipnb --display-name "vipnb (.venv)"
	$(BIN)/jupyter lab notebooks/ $(if $(SUDO),,--allow-root)

# Rewrite every .ipynb twin from its .py, with the expected outputs nbval compares.
notebooks: setup
	for nb in notebooks/[0-9][0-9]_*.py; do \
	  VIPNB_REPORTS=$(TEST_OUT)/reports VIPNB_RUNS=$(TEST_OUT)/runs \
	  $(BIN)/python -c "from vipnb.notebooks import refresh_notebook as r; print(r('$$nb'))"; \
	done

lint: setup
	$(BIN)/ruff check vipnb tests notebooks/*.py

clean:
	rm -rf build $(VENV) data/.cache data/fashion50/.vipnb_cache
