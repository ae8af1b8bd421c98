# Makefile: the entry points for building, running and testing the project
# on a Debian 12 machine. The work is done by the scripts in deploy/local/
# (see their headers); services and state live under .local/.

SHELL := /bin/bash
.DEFAULT_GOAL := help

LOCAL_SCRIPTS := deploy/local
BUILD_DIR ?= build
TEST_BUILD_DIR := build-test
TEST_CMAKE_ARGS := -DORDERS_ASAN=ON -DORDERS_WERROR=ON
TSAN_BUILD_DIR := build-tsan
TSAN_CMAKE_ARGS := -DORDERS_TSAN=ON -DORDERS_WERROR=ON

.PHONY: help build up run down test unit fuzz bench clean distclean

help:
	@echo 'make build      install missing Debian packages, build into $(BUILD_DIR)/'
	@echo 'make run        build, start PostgreSQL/RabbitMQ/Redis, migrate, seed, run the API'
	@echo '                and the consumers in the foreground; Ctrl-C stops everything'
	@echo 'make up         the same in the background; returns once /readyz answers 200'
	@echo '                and writes .local/env (connection settings)'
	@echo 'make down       stop the daemons and the services (data in .local/ is kept)'
	@echo 'make test       build with ASan/UBSan and -Werror into $(TEST_BUILD_DIR)/ (and the threaded'
	@echo '                parts with TSan into $(TSAN_BUILD_DIR)/), bring the stack up, run every'
	@echo '                test (unit + integration + tsan), take it down'
	@echo 'make unit       unit tests only (sanitizer build, no services)'
	@echo 'make fuzz       build the libFuzzer targets with clang into build-fuzz/ and run'
	@echo '                each for FUZZ_SECONDS (default 300); finds in fuzz-out/crashes/'
	@echo 'make bench      Release build into build-bench/, stack up, every benchmark of'
	@echo '                bench/run.sh, report in bench/results/; stack down (~15 min)'
	@echo 'make clean      remove the build directories'
	@echo 'make distclean  make down, then also remove .local/ (all local data)'

build:
	@BUILD_DIR='$(BUILD_DIR)' $(LOCAL_SCRIPTS)/build.sh

up:
	@BUILD_DIR='$(BUILD_DIR)' $(LOCAL_SCRIPTS)/up.sh

run:
	@BUILD_DIR='$(BUILD_DIR)' $(LOCAL_SCRIPTS)/run.sh

down:
	@$(LOCAL_SCRIPTS)/down.sh

test:
	@BUILD_DIR='$(TEST_BUILD_DIR)' CMAKE_ARGS='$(TEST_CMAKE_ARGS)' TSAN_BUILD_DIR='$(TSAN_BUILD_DIR)' \
		TSAN_CMAKE_ARGS='$(TSAN_CMAKE_ARGS)' $(LOCAL_SCRIPTS)/test.sh

unit:
	@BUILD_DIR='$(TEST_BUILD_DIR)' CMAKE_ARGS='$(TEST_CMAKE_ARGS)' $(LOCAL_SCRIPTS)/build.sh
	ASAN_OPTIONS="$${ASAN_OPTIONS:-detect_leaks=1}" \
	UBSAN_OPTIONS="$${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
	ctest --test-dir $(TEST_BUILD_DIR) -L unit --output-on-failure --no-tests=error

fuzz:
	@$(LOCAL_SCRIPTS)/install.sh
	@FUZZ_SECONDS='$(or $(FUZZ_SECONDS),300)' tests/fuzz/run.sh all

bench:
	@bench/run.sh

clean:
	rm -rf $(sort build build-bench build-fuzz $(TEST_BUILD_DIR) $(TSAN_BUILD_DIR) $(BUILD_DIR))

distclean: down clean
	rm -rf .local
