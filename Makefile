# Keel — top-level build.  `make` builds build/kernel.elf; `make run` boots it;
# `make test` installs what is missing, builds, lints and runs every test.
SHELL := /bin/bash
BUILD := build
VENV := .venv
PY := $(VENV)/bin/python
SMP ?=
RUN_ARGS ?=

.PHONY: all kernel initrd host-lib host-count-lib deps venv ffi run test lint pytest bench mutation clean

all: kernel initrd

include kernel/build.mk
include userspace/build.mk

# Debian packages the build and the tests need; installed only when missing.
deps:
	@bash scripts/install-deps

# editable_mode=compat: the package is a plain path in a .pth file; the default
# (an import hook installed by site) costs about 11 ms of every `keel` start-up.
$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $@

# keel itself runs as `python -S` (scripts/write_launcher.py): site costs ~3 ms a start.
$(VENV)/.launcher: $(VENV)/.stamp scripts/write_launcher.py
	$(PY) scripts/write_launcher.py $(VENV)
	@touch $@

venv: $(VENV)/.stamp $(VENV)/.launcher

# The KVM bindings are compiled against the system's <linux/kvm.h>.
FFI_STAMP := $(BUILD)/ffi/.stamp
$(FFI_STAMP): vmm/kvm/ffi_build.py vmm/kvm/ffi_state.py vmm/kvm/blkfast.c /usr/include/linux/kvm.h $(VENV)/.stamp
	$(PY) -m vmm.kvm.ffi_build
	@touch $@

ffi: $(FFI_STAMP)
	@# Byte-code is written here once: imports then skip compiling even where
	@# PYTHONDONTWRITEBYTECODE is set (start-up time is part of boot time).
	@$(PY) -m compileall -q vmm

run: deps venv ffi kernel initrd
	$(VENV)/bin/keel run $(BUILD)/kernel.elf --initrd $(BUILD)/initrd.cpio $(if $(SMP),--smp $(SMP)) $(RUN_ARGS) \
		|| [ $$? -eq 130 ]  # Ctrl-C is how a person ends the session, not a make error

lint: venv ffi
	$(VENV)/bin/ruff check vmm tests scripts
	$(VENV)/bin/mypy vmm

pytest: venv ffi kernel initrd host-lib host-count-lib
	$(VENV)/bin/pytest -ra tests

test: deps venv ffi kernel initrd lint pytest

bench: deps venv ffi kernel initrd
	$(PY) scripts/bench

# Hand-chosen mutants, each in a scratch copy, each against the tests that
# should catch it (scripts/mutation; not part of `make test`).
mutation: deps venv ffi kernel initrd host-lib
	$(PY) scripts/mutation

clean:
	rm -rf $(BUILD) vmm/kvm/_kvm*.so
