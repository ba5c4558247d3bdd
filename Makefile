# neatml — thin wrapper over CMake. The two commands of the README:
#   make demo   train the Fashion-MNIST LeNet on the default backend
#   make test   install what is missing, build, run every test (ending "N passed, M failed")
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
PREFIX ?= /usr/local

.PHONY: all deps build test demo quickstart bench install clean

all: build

deps:
	@bash scripts/install_deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

test: deps
	@BUILD=$(BUILD) JOBS=$(JOBS) bash scripts/run_tests.sh

quickstart: build
	./$(BUILD)/quickstart

demo: build
	@bash scripts/install_deps.sh demo
	./$(BUILD)/fashion_mnist $(DEMO_ARGS)

bench: build
	@bash scripts/install_deps.sh bench
	./$(BUILD)/neatml_bench $(BENCH_ARGS)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz $(BUILD).configure.log $(BUILD).build.log \
	  build-asan.configure.log build-asan.build.log build-tsan.configure.log build-tsan.build.log \
	  build-fuzz.configure.log build-fuzz.build.log
