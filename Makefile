# Thin wrapper: install deps, configure, build, test. The real build is CMake.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60
ifeq ($(SAN),1)
BUILD := build-san
CMAKE_FLAGS += -DAHP_SANITIZE=ON
endif

.PHONY: all deps configure build test fuzz demo bench chaos clean format

all: build

deps:
	@sh scripts/install-deps

configure: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_FLAGS)

# libFuzzer targets (clang, ASan + UBSan) in ./build-fuzz, each run FUZZ_SECONDS from its seeds.
fuzz: deps
	@sh tests/fuzz/run build-fuzz $(FUZZ_SECONDS) $(JOBS) $(FUZZ_TARGETS)

# The six-stage tour. scripts/demo installs and builds itself, quietly (the build's log
# is shown only when it fails), then runs the tour on a throwaway stack and stops it.
demo:
	@AHP_BUILD=$(BUILD) JOBS=$(JOBS) CMAKE_FLAGS="$(CMAKE_FLAGS)" sh scripts/demo

bench: build
	@AHP_BUILD=$(BUILD) sh bench/run

# docker compose smoke test (tests/compose/run): builds the image, brings compose.yaml up,
# runs the approvals tour in containers and tears it down. Needs root; not part of CTest.
.PHONY: compose-test
compose-test:
	@python3 tests/compose/run

# Whole-platform chaos test (tests/chaos): CHAOS_RUNS approval tours, CHAOS_CONCURRENCY at
# once, while random daemons are SIGKILLed and restarted for CHAOS_DURATION seconds; needs
# root. CHAOS_SEED=N repeats a run's kill schedule (0: from the clock, printed). CI runs a
# two-minute version (ctest -L chaos).
CHAOS_RUNS ?= 200
CHAOS_DURATION ?= 600
CHAOS_CONCURRENCY ?= 8
CHAOS_SEED ?= 0
chaos: build
	@python3 tests/chaos/chaos.py --bin $(BUILD)/bin --src . --runs $(CHAOS_RUNS) \
		--duration $(CHAOS_DURATION) --concurrency $(CHAOS_CONCURRENCY) --seed $(CHAOS_SEED)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-san build-fuzz
