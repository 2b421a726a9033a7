# Every target installs what it needs and starts what it needs (the dev broker), and stops only what it started.
SHELL := /bin/bash
.DEFAULT_GOAL := help
SWIFT_TEST_FLAGS ?=
# The PDR reporting suite checks timing to the second on cycles of a few seconds, with the reporter in-process: it
# runs on its own after the rest, so the heavy tests running in parallel (a kill -9 during a 20k ingest, executor and
# sandbox processes) cannot starve it for seconds. A filtered run (SWIFT_TEST_FLAGS) is one plain run.
TIMING_SUITE := PDRReporterTests.ReportingTests
ifeq ($(strip $(SWIFT_TEST_FLAGS)),)
SWIFT_TEST_RUN := swift test --skip-build --skip $(TIMING_SUITE) && swift test --skip-build --filter $(TIMING_SUITE)
else
SWIFT_TEST_RUN := swift test --skip-build $(SWIFT_TEST_FLAGS)
endif

.PHONY: help deps build test test-replicas bench bench-messaging bench-ingest bench-signin bench-erasure bench-pdr bench-memory bench-scale demo run broker-start broker-stop clean

help:
	@echo "make test             install deps, start the dev broker, build, run every test, stop the broker"
	@echo "make test-replicas    only the replica run: two of every service, three reporters, one replica of each killed"
	@echo "make bench-messaging  Messaging vs kcat on the same dev broker (see bench/messaging.sh)"
	@echo "make bench-ingest     profile-store ingest of 100k profiles vs kcat consume (see bench/ingest.sh)"
	@echo "make bench-signin     sign-ins through oauth-gateway vs bare sandbox sequences (see bench/signin.sh)"
	@echo "make bench-erasure    10,000 closed statuses at 2,000/s through the executor and 3 participants (bench/erasure.sh)"
	@echo "make bench-pdr        one PDR cycle of 100,000 accounts over 3 apps against the sandbox (bench/pdr.sh)"
	@echo "make bench-scale      erasure and reporting throughput with 1/2/3 replicas, restore of 100k (bench/scale.sh)"
	@echo "make demo             the whole system as local processes, a scripted scenario and a report (scripts/lethe-demo)"
	@echo "make run              the whole system, left running until Ctrl-C, with its URLs and credentials printed"
	@echo "make broker-start     start the dev broker and leave it running (prints its address)"
	@echo "make broker-stop      stop the dev broker started by broker-start"

deps:
	@scripts/install-deps

build: deps
	swift build --build-tests

# Event bodies the Swift code writes (Tests/ContractsTests/ContractSamplesTests.swift), checked against docs/schemas.
CONTRACT_SAMPLES_DIR := $(CURDIR)/.run/contract-samples

# A dev broker the tests start runs ahead of them in priority when the user may raise it (root, as in CI): see
# scripts/dev-broker. Benchmarks start theirs as it was when their figures were recorded.
TEST_BROKER := LETHE_BROKER_PRIORITY=high

test: build
	rm -rf "$(CONTRACT_SAMPLES_DIR)"
	LETHE_CONTRACT_SAMPLES_DIR="$(CONTRACT_SAMPLES_DIR)" $(TEST_BROKER) scripts/with-dev-broker bash -c \
		'$(SWIFT_TEST_RUN) && python3 -m pytest -q examples/python-participant \
		 && python3 -m pytest -q Tests/e2e && python3 -m pytest -q Tests/replicas' 
	@# A filtered run may have skipped the samples test: write them anyway (no broker needed).
	@[ -e "$(CONTRACT_SAMPLES_DIR)/EraseSubject.full.json" ] || LETHE_CONTRACT_SAMPLES_DIR="$(CONTRACT_SAMPLES_DIR)" \
		swift test --skip-build --filter ContractsTests.ContractSamplesTests
	scripts/validate-contracts "$(CONTRACT_SAMPLES_DIR)"
	scripts/validate-compose

# Only the replica run (Tests/replicas): two of every service and three reporters, one replica of each killed.
test-replicas: build
	$(TEST_BROKER) scripts/with-dev-broker python3 -m pytest -q Tests/replicas

# Release builds of the named products (SwiftPM builds one product per call, or everything).
release = $(foreach product,$(1),swift build -c release --product $(product) &&) true

bench-messaging: deps
	$(call release,messaging-bench)
	bench/record messaging -- scripts/with-dev-broker --fresh bench/messaging.sh

bench-ingest: deps
	$(call release,profile-store ingest-bench)
	bench/record ingest -- scripts/with-dev-broker --fresh bench/ingest.sh

bench-signin: deps
	$(call release,atlassian-sandbox oauth-gateway signin-bench)
	bench/record signin -- scripts/with-dev-broker --fresh bench/signin.sh

bench-erasure: deps
	$(call release,erasure-executor profile-store erasure-bench)
	bench/record erasure -- scripts/with-dev-broker --fresh bench/erasure.sh

bench-pdr: deps
	$(call release,atlassian-sandbox oauth-gateway pdr-reporter pdr-bench)
	bench/record pdr -- scripts/with-dev-broker --fresh bench/pdr.sh

bench-memory: deps
	$(call release,atlassian-sandbox oauth-gateway profile-store pdr-reporter erasure-executor operator-console pdr-bench)
	bench/record memory -- scripts/with-dev-broker --fresh bench/memory.sh

bench-scale: deps
	$(call release,atlassian-sandbox oauth-gateway pdr-reporter pdr-bench erasure-executor profile-store erasure-bench)
	bench/record scale -- scripts/with-dev-broker --fresh bench/scale.sh

# Every bench in one go (a shorter PDR cycle than bench-pdr alone, to stay near 30 minutes on 2 cores); each files its
# last line in bench/results.json and bench/RESULTS.md. Stops at the first bench that fails.
bench: deps
	swift build -c release
	$(MAKE) --no-print-directory bench-messaging bench-ingest bench-signin bench-erasure bench-memory bench-scale
	PDR_CYCLE_SECONDS=180 CONTINUOUS_CYCLE_SECONDS=40 $(MAKE) --no-print-directory bench-pdr
	bench/record --report

# The scripted scenario ends with its own report; `run` leaves everything up until Ctrl-C. Each starts the dev
# broker unless KAFKA_BOOTSTRAP_SERVERS is set, and stops only what it started.
demo run: deps
	swift build
	scripts/lethe-demo $@

broker-start: deps
	@scripts/dev-broker start

broker-stop:
	@scripts/dev-broker stop

clean:
	rm -rf .build .run
