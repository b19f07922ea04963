# nubo: the top-level entry points. meson + ninja do the building.
#   make            release build in build/
#   make up         build, then bring up a single-host cloud (scripts/up.sh)
#   make check      every test (unit + end-to-end) under ASan/UBSan; ends "N passed, N failed"
#   make bench      benchmarks (bench/), numbers go to docs/performance.md
PREFIX ?= /usr/local

all: build/build.ninja
	ninja -C build

build/build.ninja:
	@scripts/deps.sh build
	meson setup build --buildtype=debugoptimized

build-asan/build.ninja:
	@scripts/deps.sh build
	meson setup build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

asan: build-asan/build.ninja
	ninja -C build-asan

up: all
	@scripts/deps.sh run
	scripts/up.sh

down:
	scripts/up.sh stop

check:
	@scripts/deps.sh all
	tests/run

unit: asan
	meson test -C build-asan --print-errorlogs

bench: all
	@scripts/deps.sh all
	bench/run

install: all
	meson install -C build --destdir "$(DESTDIR)"

clean:
	rm -rf build build-asan

.PHONY: all asan up down check unit bench install clean
