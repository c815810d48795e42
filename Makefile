# Thin front end over CMake. The two commands a newcomer needs:
#   make demo   build the library and run the examples
#   make test   build and run the whole test suite (installs its Debian deps as root)
BUILD ?= build
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all build demo test bench install clean

all: build

build:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

demo:
	scripts/test-deps.sh --demo
	$(MAKE) build
	examples/run-demo.sh $(BUILD)

test:
	scripts/test-deps.sh
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench:
	scripts/bench-deps.sh
	cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DTW_BUILD_BENCH=ON \
	      -DTW_BUILD_TESTS=OFF -DTW_BUILD_EXAMPLES=OFF >/dev/null
	cmake --build build-bench -j $(JOBS)
	bench/run.sh build-bench

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) build-*
