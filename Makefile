# The two set-up commands of the README. Both create .venv when it is missing and install from the
# constraints file (torch pinned to the local 2.13.0 CPU build; a looser pin pulls CUDA wheels).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
STAMP  := $(VENV)/.fiberlab-installed

.PHONY: verify test book bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PIP) -e ".[test,book,verl-runtime,verl-actor]"
	$(PIP) --no-deps verl==0.9.1
	touch $(STAMP)

verify: $(STAMP)
	$(VENV)/bin/fiberlab verify

test: $(STAMP)
	bash .ci/test

book: $(STAMP)
	rm -rf book/_build
	$(VENV)/bin/jupyter-book build book -W -n --keep-going

bench: $(STAMP)
	$(VENV)/bin/fiberlab bench band

clean:
	rm -rf book/_build .pytest_cache .hypothesis
