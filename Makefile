# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.overinterp-installed
# exact versions of everything installed (pyproject.toml holds the ranges)
CONSTRAINTS := constraints.txt

.PHONY: demo test lint typecheck docs docs-serve dist wheel-check constraints bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test,docs]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m overinterp demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench docs/hooks
	$(VENV)/bin/ruff format --check src tests bench docs/hooks

# mypy on src/ (settings and the per-module baseline in pyproject.toml)
typecheck: $(STAMP)
	$(PY) -m mypy

# the documentation site, built strictly into site/ (docs-serve: live preview on http://127.0.0.1:8000)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

# sdist + wheel into dist/, metadata checked by twine
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build -q --outdir dist . >/dev/null
	$(PY) -m twine check --strict dist/*

# install the wheel into a new venv that sees only the tested dependency set (the project venv's
# site-packages, read-only, through a .pth file) with no index: it fails if the wheel's declared
# ranges do not admit the tested versions, if a file is missing from the wheel, or if the
# console script does not start. (A fully fresh venv downloads ~5 GB of torch and takes minutes.)
WHEEL_VENV ?= build/wheel-venv
wheel-check: dist
	rm -rf $(WHEEL_VENV)
	$(PY) -m venv --without-pip $(WHEEL_VENV)
	$(PY) -c "import sys; print('\n'.join(p for p in sys.path if p.endswith('-packages')))" \
	  > "$$($(WHEEL_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/tested-deps.pth"
	$(PY) -m pip --python $(WHEEL_VENV)/bin/python install -q --no-index --no-deps --no-build-isolation dist/*.whl
	$(PY) -m pip --python $(WHEEL_VENV)/bin/python check
	cd $(WHEEL_VENV) && bin/overinterp --help >/dev/null && bin/python -c "import overinterp, pathlib; \
	  p = pathlib.Path(overinterp.__file__); assert 'wheel-venv' in str(p), p; \
	  assert (p.parent / 'py.typed').is_file(); print('wheel ok:', overinterp.__version__, p.parent)"

# rewrite constraints.txt from the current venv
constraints: $(STAMP)
	{ head -2 $(CONSTRAINTS); $(PY) -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

bench: $(STAMP)
	$(PY) bench/backselect.py

clean:
	rm -rf runs .pytest_cache site dist build .mypy_cache
