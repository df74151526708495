# One virtualenv per clone; every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: install sglang-sim cluster-bins demo serve-tiny test lint bench soak

# Each step says what it does, and how long it took: pip itself stays quiet (-q) but for errors.
$(VENV)/.installed: pyproject.toml dev/pyproject.toml
	@echo "install [1/4]: virtualenv $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@# torch first and pinned: a floating torch pulls a multi-GB CUDA build.
	@echo "install [2/4]: torch 2.13.0, CPU build (the largest download, once) ..."
	@t=$$(date +%s); $(PIP) install torch==2.13.0 && echo "install [2/4]: torch ready ($$(( $$(date +%s) - t )) s)"
	@echo "install [3/4]: the engine, the operator, the dev tools and their dependencies, editable ..."
	@t=$$(date +%s); $(PIP) install -e '.[engine,operator,dev,router]' -e ./dev && \
		echo "install [3/4]: packages ready ($$(( $$(date +%s) - t )) s)"
	@echo "install [4/4]: kubectl and helm into .tools/bin"
	@$(PY) scripts/install_tools.py
	@touch $@

install: $(VENV)/.installed

# The SGLang side venv (.cache/sglang-venv): SGLang 0.5.23's real HTTP frontend on CPU, with the project's
# torch. The argv tests use its parser; the SGLang-backend tests run `python -m sglang_dev.sglang_sim` (SGLang's
# server with a simulated scheduler) under it. A few minutes the first time; idempotent (version stamp).
sglang-sim:
	scripts/sglang_venv.sh

# The real control plane's binaries, built from Go modules pinned in cluster/*/go.mod (kube-apiserver,
# controller-manager, scheduler and kubectl in one binary; etcd) into ~/.cache/sglang-operator/cluster-bins/.
# Cold: tens of minutes on 2 cores, with progress; a no-op when built. Needs Go 1.26+ and the Go module proxy.
cluster-bins:
	python3 scripts/build_cluster_bins.py

# Serve builtin:tiny on 127.0.0.1 and stream one chat completion to the terminal.
serve-tiny: install
	$(PY) scripts/serve_tiny.py

# The whole system on this machine: local cluster (the Go-built control plane, so a fresh machine builds
# cluster-bins first; node agent, service proxy, operator), examples/tiny.yaml applied with kubectl, a
# streamed chat completion, a LoRA adapter added live. KEEP=1 leaves the cluster running (stop it with
# `.venv/bin/sglang-operator dev down`). BACKEND=sglang serves examples/tiny-sglang.yaml: SGLang's real
# frontend with a simulated scheduler (builds sglang-sim). EMULATOR=1 runs on the API emulator (no Go build).
demo: install $(if $(EMULATOR),,cluster-bins) $(if $(filter sglang,$(BACKEND)),sglang-sim)
	$(PY) scripts/demo.py

test: install sglang-sim cluster-bins
	$(VENV)/bin/ruff check engine operator dev tests scripts bench
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check engine operator dev tests scripts bench
	$(VENV)/bin/mypy

# Benchmarks (docs/benchmarks.md): engine streaming overhead, then operator scale; about 10 minutes on
# 2 cores. JSON + markdown in bench/results/, plots in docs/img/. Longer runs: see the scripts' --help.
bench: install
	$(PIP) install -e '.[bench]'
	$(PY) bench/engine_stream.py $(ENGINE_BENCH_ARGS)
	$(PY) bench/operator_scale.py $(OPERATOR_BENCH_ARGS)

# Engine soak (bench/soak_engine.py): mixed load, floods and SGLang kills for SOAK_MINUTES (default 5),
# watching RSS, fds and leftover processes; exits 1 when a promise breaks. Results in bench/results/.
soak: install
	$(PY) bench/soak_engine.py --minutes $(or $(SOAK_MINUTES),5) $(SOAK_ARGS)
