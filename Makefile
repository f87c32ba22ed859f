# nstrack build and test. Every target works as root on a fresh Debian 12 machine and is idempotent.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# tests call ip(8), bpftool and friends from the sbin folders, whatever PATH CI starts with
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARCH   := x86
BPF_OUT := nstrack/_bpf
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,$(BPF_OUT)/%.bpf.o,$(BPF_SRC))
# Debian packages the build, the runtime and the tests need.
DEB_PKGS := clang llvm libbpf1 libbpf-dev bpftool util-linux iproute2 python3-venv time prometheus systemd openssl \
            podman runc mmdebstrap
LISTEN ?= 127.0.0.1:9864

.PHONY: help setup deps bpf venv run test test-unit test-host vmtest bench bench-vm clean doctor lint

help:
	@echo "make run    - set up, then run the main job on this host (needs root)"
	@echo "make test   - set up, then the whole test suite: unit, privileged on this host, kernel matrix"
	@echo "make setup  - Debian packages, .venv with nstrack installed editable, BPF objects"
	@echo "make schema - regenerate nstrack/schema/snapshot.schema.json from the models"
	@echo "make lint   - ruff (its defaults, pinned version) and mypy --strict; zero findings wanted"
	@echo "make bench  - benchmarks, JSON results under build/bench/"
	@echo "make vmtest - only the kernel matrix (QEMU)"
	@echo "make bench-vm - the lifecycle benchmark in each kernel of the matrix (fentry, kprobe)"

setup: deps venv bpf build/nshelper

# The tests' namespace maker (tests/privileged/nshelper.c): a C program, since the kernel matrix's guests
# pay about half a second of emulated CPU for each Python start
build/nshelper: tests/privileged/nshelper.c | deps
	@mkdir -p build
	clang -O2 -Wall -Werror -o $@ $<

# Installs only what is missing; apt-get update only when something is.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  [ "$$(id -u)" = 0 ] || { echo "error: installing packages needs root (missing: $$missing)" >&2; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat: the source tree on sys.path through a plain .pth; the default editable finder costs every
	# command ~11 ms of imports at start (nstrack ls is benchmarked cold)
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	@touch $@

# The objects, then nstrack/kernel/bpf_names.py: their programs, maps and globals as Python names
BPF_NAMES := nstrack/kernel/bpf_names.py
bpf: $(BPF_OBJ) $(BPF_NAMES)

$(BPF_NAMES): $(BPF_OBJ) bpf/gen_names.py
	PYTHONPATH=. $(PYTHON) bpf/gen_names.py $@ $(BPF_OBJ)

# The linters, pinned in pyproject.toml's `lint` extra (a new ruff changes its default rules).
$(VENV)/.lint-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[lint]' --config-settings editable_mode=compat
	@touch $@

# The snapshot's JSON Schema from its pydantic models (tests/unit/test_snapshot.py fails while it is stale)
.PHONY: schema
schema: $(VENV)/.installed
	$(PY) -m nstrack.schema

LINT_PY := nstrack tests dashboards deploy bpf
lint: $(VENV)/.lint-installed
	$(VENV)/bin/ruff check $(LINT_PY)
	MYPYPATH=tests/vm $(VENV)/bin/mypy --strict nstrack tests/suite.py bpf/gen_names.py  # (and tests/vm/vmtest.py, which suite.py imports)

$(BPF_OUT)/%.bpf.o: bpf/%.bpf.c bpf/vmlinux.h $(wildcard bpf/*.h) | deps
	@mkdir -p $(BPF_OUT)
	clang -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -Ibpf -c $< -o $@.tmp
	llvm-strip -g $@.tmp
	@mv $@.tmp $@

# The main job: the exporter on localhost (see README for the endpoints).
run: setup
	$(VENV)/bin/nstrack serve --listen $(LISTEN)

doctor: setup
	$(VENV)/bin/nstrack doctor

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-host: setup
	$(PY) -m pytest tests -q -p no:cacheprovider --junitxml=build/junit-host.xml

VMTEST_KERNELS ?=
vmtest: setup
	$(PYTHON) tests/vm/vmtest.py $(if $(VMTEST_KERNELS),--kernels $(VMTEST_KERNELS))

# The unit and host suites, then the matrix; ends with each part's duration and one count line
test: setup
	$(PYTHON) tests/suite.py --python $(PY) $(if $(VMTEST_KERNELS),--kernels $(VMTEST_KERNELS))

bench: setup
	@mkdir -p build/bench
	$(PY) -m tests.bench

# The lifecycle benchmark in every kernel of the matrix, fentry and kprobe modes (build/vmbench/*/lifecycle.json)
# The guests' clocks count instructions (QEMU -icount, 2**VMBENCH_ICOUNT ns each): the shared host's load
# spread runs of one configuration 3-8% under plain TCG, under -icount ±1-4% (the kernels' own variation). -icount runs vCPUs in turn
# on one host thread anyway, so vmtest.py boots one with it (5.10 and 6.1 hang bringing up a second there).
# VMBENCH_ICOUNT= (empty): host time, two vCPUs in parallel.
VMBENCH_ICOUNT ?= 2
bench-vm: setup
	$(PYTHON) tests/vm/vmtest.py --out build/vmbench --cmd "exec /bin/sh tests/vm/bench.sh" $(if $(VMTEST_KERNELS),--kernels $(VMTEST_KERNELS)) $(if $(VMBENCH_ICOUNT),--icount $(VMBENCH_ICOUNT))

# The container image (deploy/container/), with podman's state under build/image/: wheels built here (BPF
# objects from `make bpf`), on a Debian base made locally with mmdebstrap (cached in .cache/image/), or on
# IMAGE_BASE, e.g. docker.io/library/debian:bookworm-slim, where a registry is reachable.
IMAGE_BASE ?=
.PHONY: image
image: setup
	$(PY) deploy/container/build_image.py $(if $(IMAGE_BASE),--base $(IMAGE_BASE))

clean:
	rm -rf build $(BPF_OUT) $(BPF_NAMES) $(VENV) *.egg-info
