# The single entry point: `make demo` runs the main job locally, `make test` runs every check.
# Both install what they need (a uv-managed .venv from uv.lock) on a machine with python3 and make;
# `make test` also runs `make browser`, which installs Debian's Chromium (/usr/bin/chromium) and a Japanese font
# (fonts-noto-cjk) for the browser tests when they are missing (with apt-get, as root; elsewhere it says how and fails).

PYTHON ?= python3
UV_VERSION := 0.13.8
CHECKOV_VERSION := 3.3.30
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
#: Installed packages get their bytecode at install (13 s once): every `soracharge` command, and each test that runs
#: one, then starts in about 5 s instead of 8 (where PYTHONDONTWRITEBYTECODE is set, Python never caches it itself).
export UV_COMPILE_BYTECODE := 1
#: The browser tests drive this Chromium through playwright (playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium

.PHONY: install demo-install docs docs-reference browser demo bench test lint typecheck template-check security layer-requirements check-layer-requirements layer-size unit integration mutants mutants-report clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --extra local --python $(PYTHON)
	touch $@

## What the demo runs and nothing more (no test, lint or docs tools): the runtime, moto, the simulators, the CLI.
## --inexact: a .venv that `make test` filled keeps its tools.
demo-install: $(VENV)/.demo-installed

$(VENV)/.demo-installed: pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --inexact --extra local --no-default-groups --python $(PYTHON)
	touch $@

## The main job, end to end on the built-in simulators and moto: last month's bill becomes charges
## (MONTH=yyyyMM for another month; out/history.html lists every month run so far).
demo: demo-install
	$(BIN)/soracharge run --mapping examples/mapping.example.yaml --out out $(if $(MONTH),--month $(MONTH),)

## The benchmarks of the import (figures in bench/README.md and the README).
bench: install
	$(BIN)/python bench/import_throughput.py
	$(BIN)/python bench/import_concurrency.py

## Every check CI runs: lint, types, the template and its security scan, the docs site, then the whole test suite.
test: lint typecheck template-check security check-layer-requirements layer-size docs browser
	$(BIN)/pytest

## The reference pages (docs/reference/*.md), generated from the code: the CLI, settings, template, alerts
## (tests/docs/test_reference_pages.py fails when one is stale).
docs-reference: install
	$(BIN)/python scripts/docs_reference.py

## The documentation site (docs/, mkdocs.yml) in site/: --strict, so a broken link or a page left out of the nav fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## Debian's Chromium and a Japanese (CJK) font for tests/browser (the HTML report in a real browser, its Japanese
## customer names drawn as text, not as empty boxes): installed when missing.
browser:
	@if [ -x $(CHROMIUM) ] && [ -n "$$(fc-list :lang=ja 2>/dev/null)" ]; then \
		echo "Chromium for the browser tests: $(CHROMIUM), with a Japanese font"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-noto-cjk \
			&& test -x $(CHROMIUM) && [ -n "$$(fc-list :lang=ja)" ]; \
	else \
		echo "The browser tests need Chromium at $(CHROMIUM) and a Japanese font: on Debian or Ubuntu run" \
			"'sudo apt-get install -y --no-install-recommends chromium fonts-noto-cjk' (or 'make browser' as root)."; \
		exit 1; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

template-check: install
	$(BIN)/cfn-lint template.yaml

## checkov over the SAM-translated template, in its own environment (it pins an older boto3).
security: install
	$(BIN)/python scripts/translate_template.py build/template.json
	$(UV) tool run --quiet --from checkov==$(CHECKOV_VERSION) checkov --config-file .checkov.yaml -f build/template.json

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

## Mutation testing of the money rules (the modules of [tool.mutmut] in pyproject.toml; not in CI: it takes hours, and
## resumes where it stopped): mutmut runs in mutants/, where soracharge and the tests are links (its copy, mutants/mutants,
## must have the package at its root); then each module's score and its surviving mutants.
## MUTMUT_ARGS goes to the first `mutmut run`, e.g. MUTMUT_ARGS="'soracharge.logic.charges.*'"; MUTMUT_CHILDREN (how many
## mutants run at once, both runs) defaults to mutmut's (a process per core). When a test changed since mutmut last traced
## which tests reach which function, it traces them all again (its incremental tracing missed new tests); the mutants that
## had survived before this run are then tried again on today's tests (mutmut keeps a result until the mutant's own code
## changes). The results are recorded in docs/development/mutants.json.gz after the run (failed or not) and restored
## into a new checkout's mutants/ before it (scripts/mutants.py --record during a run keeps what it has done so far).
## MUTMUT_SAMPLE=N runs, instead of MUTMUT_ARGS, up to N mutants of each module not yet checked, drawn at random with
## MUTMUT_SEED (0): the table's "at least" is then what each module's score is at least, at 95 %.
MUTMUT_CHILDREN ?=
MUTMUT_SEED ?= 0
mutants: $(UV)
	$(UV) sync --frozen --inexact --extra local --group mutation --python $(PYTHON)
	mkdir -p mutants/mutants
	ln -sfn ../layers/soracharge/soracharge mutants/soracharge
	ln -sfn ../pyproject.toml mutants/pyproject.toml
	ln -sfn ../../tests mutants/mutants/tests
	if [ -n "$$(find tests -name '*.py' -newer mutants/mutants/mutmut-stats.json 2>/dev/null | head -1)" ]; then \
		rm -f mutants/mutants/mutmut-stats.json; fi
	$(BIN)/python scripts/mutants.py --restore
	survivors="$$($(BIN)/python scripts/mutants.py --survivors)" || exit 1; \
		$(if $(MUTMUT_SAMPLE),drawn="$$($(BIN)/python scripts/mutants.py --sample $(MUTMUT_SAMPLE) --seed $(MUTMUT_SEED))" || exit 1;) \
		cd mutants && ../$(BIN)/mutmut run $(if $(MUTMUT_CHILDREN),--max-children $(MUTMUT_CHILDREN)) \
			$(if $(MUTMUT_SAMPLE),$$drawn,$(MUTMUT_ARGS)) && \
		if [ -n "$$survivors" ]; then \
			../$(BIN)/mutmut run $(if $(MUTMUT_CHILDREN),--max-children $(MUTMUT_CHILDREN)) $$survivors; fi; \
		status=$$?; cd .. && $(BIN)/python scripts/mutants.py --record && exit $$status
	$(BIN)/python scripts/mutants.py

## The recorded mutation results (docs/development/mutants.json.gz) as make mutants prints them, without running mutmut:
## what the development page's table says, in a new checkout.
mutants-report: $(UV)
	$(UV) sync --frozen --inexact --extra local --group mutation --python $(PYTHON)
	$(BIN)/python scripts/mutants.py --restore
	$(BIN)/python scripts/mutants.py

## The layer installs exactly the locked runtime dependencies (sam build reads this file).
layer-requirements: $(UV)
	$(UV) export --frozen --no-default-groups --no-emit-project --no-hashes --no-header --format requirements-txt \
		--output-file layers/soracharge/requirements.txt --quiet

## The shared layer, installed for the Lambda platform (python3.13, x86_64), plus each function's code: under 250 MB.
layer-size: install
	$(BIN)/python scripts/layer_size.py --uv $(UV)

check-layer-requirements: $(UV)
	@$(UV) export --frozen --no-default-groups --no-emit-project --no-hashes --no-header --format requirements-txt --quiet \
		| diff -u layers/soracharge/requirements.txt - \
		|| (echo "layers/soracharge/requirements.txt is out of date with uv.lock: run 'make layer-requirements'"; exit 1)

clean:
	rm -rf $(VENV) $(TOOLS) out site .pytest_cache .mypy_cache .ruff_cache
