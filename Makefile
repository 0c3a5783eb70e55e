# uffd-manager: plain GNU make. `make help` lists the targets.

PREFIX	?= /usr/local
DESTDIR	?=
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
UNITDIR	?= $(PREFIX)/lib/systemd/system
BUILD	?= build

CC		?= cc
PKG_CONFIG	?= pkg-config
PROTOC_C	?= protoc-c
CFLAGS		?= -O2 -g

# Warnings live here and nowhere else.
WARNINGS := -Wall -Wextra -Wformat=2 -Wshadow -Wmissing-prototypes \
	    -Wstrict-prototypes -Wpointer-arith -Wvla
# protoc-c output is not ours to fix; keep it quiet but still checked.
GEN_WARNINGS := -Wall -Wno-unused-parameter

PKGS	  := libprotobuf-c libnl-3.0 libnl-genl-3.0 json-c gnutls
TEST_PKGS := criterion

PKG_CFLAGS	= $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS	= $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
TEST_CFLAGS	= $(shell $(PKG_CONFIG) --cflags $(TEST_PKGS) 2>/dev/null)
TEST_LIBS	= $(shell $(PKG_CONFIG) --libs $(TEST_PKGS) 2>/dev/null)

ALL_CPPFLAGS = -D_GNU_SOURCE -Iinclude -Imanager -Iinject -I$(BUILD)/proto $(PKG_CFLAGS) $(CPPFLAGS)
ALL_CFLAGS   = -std=gnu11 -pthread $(CFLAGS) $(SAN_FLAGS)
ALL_LDFLAGS  = -pthread $(LDFLAGS) $(SAN_FLAGS)

PROTOS	:= $(wildcard proto/*.proto)
PB_C	:= $(PROTOS:proto/%.proto=$(BUILD)/proto/%.pb-c.c)
PB_H	:= $(PB_C:.c=.h)
PB_O	:= $(PB_C:.c=.o)

COMMON_O  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard proto/*.c runtime/*.c)) $(PB_O)
MANAGER_O := $(patsubst %.c,$(BUILD)/%.o,$(filter-out manager/main.c,$(wildcard manager/*.c)))
INJECT_O  := $(patsubst %.c,$(BUILD)/%.o,$(filter-out inject/main.c,$(wildcard inject/*.c)))
UNIT_O	  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/unit/*.c))
INTEG_O	  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/integration/*.c))
TESTLIB_O := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/lib/*.c))
HELPERS	  := $(patsubst test/helpers/%.c,$(BUILD)/test/helpers/%,$(wildcard test/helpers/*.c))
BENCH_O	  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/bench/*.c))
BENCH	  := $(BUILD)/test/bench/uffd-bench
FUZZERS	  := $(patsubst test/fuzz/fuzz_%.c,%,$(wildcard test/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZERS:%=$(BUILD)/test/fuzz/fuzz-%)

LIBCOMMON  := $(BUILD)/libcommon.a
LIBMANAGER := $(BUILD)/libmanager.a
LIBINJECT  := $(BUILD)/libinject.a
BINS	   := $(BUILD)/uffd-manager $(BUILD)/uffd-inject
TESTS	   := $(BUILD)/test/unit-tests $(if $(INTEG_O),$(BUILD)/test/integration-tests)

MAN8	:= $(wildcard man/*.8)
MAN5	:= $(wildcard man/*.5)

.PHONY: all deps check test demo install uninstall asan clean help
.PHONY: bench stress fuzz fuzz-build fuzz-regress fuzzers interop
.DELETE_ON_ERROR:
.SECONDARY: $(PB_C) $(PB_H)

all: $(BINS)

help:
	@echo "make            build uffd-manager and uffd-inject into $(BUILD)/"
	@echo "make deps       install missing Debian build dependencies (apt-get)"
	@echo "make check      deps, build, then every test"
	@echo "make demo       deps, build, then show the tools on real data"
	@echo "make bench      deps, build, then the benchmarks; figures into BENCHMARKS.md"
	@echo "                (BENCH_QUICK=1: a shorter run; CRIU=/path/to/criu adds criu"
	@echo "                restore --lazy-pages with our daemon against criu's own)"
	@echo "make stress     the release-race tests at full size: 600 processes per"
	@echo "                test (3000) and 300 uffd-inject lazy hand-overs (STRESS_N=N);"
	@echo "                the daemon killed at $(STRESS_KILLS) random points (STRESS_KILLS=N)"
	@echo "make asan       build and test with AddressSanitizer and UBSan"
	@echo "make fuzz       build the libFuzzer harnesses (clang) into $(FUZZ_BUILD)/ and run"
	@echo "                each for FUZZ_TIME seconds (default 60); fails on any finding"
	@echo "make interop CRIU=/path/to/criu"
	@echo "                post-copy over TLS with real CRIU on both ends of the daemon"
	@echo "                (criu dump --lazy-pages --tls, criu restore --lazy-pages), and"
	@echo "                criu restore of uffd-inject dumps (--kill, a pre-dump chain,"
	@echo "                --lazy-pages from uffd-manager criu); skips without CRIU"
	@echo "make install    install binaries and man pages (PREFIX, DESTDIR)"
	@echo "make clean      remove $(BUILD)/, build-asan/ and $(FUZZ_BUILD)/"

deps:
	@scripts/deps

# Generated protobuf code goes to the build dir only.
$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	$(PROTOC_C) --proto_path=proto --c_out=$(BUILD)/proto $<

$(BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c | $(PB_H)
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(GEN_WARNINGS) -c -o $@ $<

$(BUILD)/test/%.o: test/%.c | $(PB_H)
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) -Itest/lib -DTEST_SRCDIR='"$(CURDIR)"' -DTEST_BUILDDIR='"$(abspath $(BUILD))"' \
		$(TEST_CFLAGS) $(ALL_CFLAGS) $(WARNINGS) -MMD -MP -c -o $@ $<

$(BUILD)/%.o: %.c | $(PB_H)
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) $(WARNINGS) -MMD -MP -c -o $@ $<

$(LIBCOMMON): $(COMMON_O)
	$(AR) rcs $@ $^
$(LIBMANAGER): $(MANAGER_O)
	$(AR) rcs $@ $^
$(LIBINJECT): $(INJECT_O)
	$(AR) rcs $@ $^

$(BUILD)/uffd-manager: $(BUILD)/manager/main.o $(LIBMANAGER) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/uffd-inject: $(BUILD)/inject/main.o $(LIBINJECT) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/test/unit-tests: $(UNIT_O) $(TESTLIB_O) $(LIBMANAGER) $(LIBINJECT) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS)

$(BUILD)/test/integration-tests: $(INTEG_O) $(TESTLIB_O) $(LIBMANAGER) $(LIBINJECT) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS)

$(BUILD)/test/helpers/%: $(BUILD)/test/helpers/%.o $(TESTLIB_O) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BENCH): $(BENCH_O) $(TESTLIB_O) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

# Real CRIU against the daemon, by hand (scripts/interop), and restoring
# uffd-inject's dumps (scripts/interop-restore): skips without CRIU=.
interop: $(BINS) $(BUILD)/test/helpers/rworkload $(BUILD)/test/helpers/trworkload
	@BUILD=$(BUILD) CRIU="$(CRIU)" scripts/interop
	@BUILD=$(BUILD) CRIU="$(CRIU)" scripts/interop-restore

# Criterion runs each test in its own process; -j2 fits this 2-core machine.
CRITERION_ARGS ?= -j2

# The daemon built again with another version (UFFD_ALT_BUILD): the restart
# tests upgrade to it under running processes, a different build taking over.
ALT := $(BUILD)/alt/uffd-manager

$(ALT): $(wildcard manager/*.[ch] runtime/*.c proto/*.[ch] proto/*.proto include/*.h)
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/alt CPPFLAGS="$(CPPFLAGS) -DUFFD_ALT_BUILD=1" $(ALT)

test: $(BINS) $(TESTS) $(HELPERS) $(ALT)
	@set -e; for t in $(TESTS); do \
		echo "== $$t"; \
		UFFD_TEST_BUILD=$(abspath $(BUILD)) $$t $(CRITERION_ARGS); \
	done
	@$(MAKE) --no-print-directory fuzz-regress

check: deps
	@$(MAKE) --no-print-directory test

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH) $(HELPERS)
	UFFD_TEST_BUILD=$(abspath $(BUILD)) CRIU="$(CRIU)" $(BENCH) --md $(CURDIR)/BENCHMARKS.md

# The release-race tests (test/integration/test_release.c) at full size.
STRESS_N ?= 600

# Daemon restarts under load (test/integration/test_restart.c): SIGKILLs.
STRESS_KILLS ?= 100

stress: deps
	@$(MAKE) --no-print-directory $(BINS) $(BUILD)/test/integration-tests $(BUILD)/test/helpers/workload $(ALT)
	UFFD_RESTART_KILLS=$(STRESS_KILLS) UFFD_TEST_BUILD=$(abspath $(BUILD)) \
		$(BUILD)/test/integration-tests --filter 'restart/random_kills' -j1
	UFFD_RELEASE_N=$(STRESS_N) UFFD_TEST_BUILD=$(abspath $(BUILD)) \
		$(BUILD)/test/integration-tests --filter 'release/*' -j1
	UFFD_RELEASE_N=$$(( $(STRESS_N) / 2 )) UFFD_TEST_BUILD=$(abspath $(BUILD)) \
		$(BUILD)/test/integration-tests --filter 'lazy/churn_through_release' -j1

demo: deps
	@$(MAKE) --no-print-directory all $(BUILD)/test/helpers/demo-serve $(BUILD)/test/helpers/workload $(BUILD)/test/helpers/rworkload
	@scripts/demo $(BUILD)

asan: deps
	@LSAN_OPTIONS=suppressions=$(CURDIR)/test/lsan.supp:print_suppressions=0 \
	$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="-O1 -g -fno-omit-frame-pointer" \
		SAN_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

# libFuzzer harnesses (test/fuzz/): everything built again with clang and
# the fuzzer's coverage, ASan and UBSan into $(FUZZ_BUILD)/. `make fuzz` runs
# each for FUZZ_TIME seconds from its committed corpus (new inputs go to
# $(FUZZ_BUILD)/corpus/, findings to $(FUZZ_BUILD)/artifacts/); `make check`
# runs each over its committed corpus once, as a regression test.
FUZZ_BUILD	?= build-fuzz
FUZZ_CC		?= clang
FUZZ_TIME	?= 60
FUZZ_ARGS	?=
FUZZ_ENV	= ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		  LSAN_OPTIONS=suppressions=$(CURDIR)/test/lsan.supp:print_suppressions=0

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) \
		CFLAGS="-O1 -g -fno-omit-frame-pointer -Wno-gnu-variable-sized-type-not-at-end -Wno-format-nonliteral" \
		SAN_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
		fuzzers

fuzzers: $(FUZZ_BINS)

$(BUILD)/test/fuzz/fuzz-%: $(BUILD)/test/fuzz/fuzz_%.o $(LIBMANAGER) $(LIBINJECT) $(LIBCOMMON)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(PKG_LIBS)

fuzz: deps
	@$(MAKE) --no-print-directory fuzz-build
	@set -e; for f in $(FUZZERS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$f $(FUZZ_BUILD)/artifacts; \
		echo "== fuzz-$$f for $(FUZZ_TIME) s (log in $(FUZZ_BUILD)/fuzz-$$f.log)"; \
		if ! $(FUZZ_ENV) $(FUZZ_BUILD)/test/fuzz/fuzz-$$f -max_total_time=$(FUZZ_TIME) \
			-timeout=20 -max_len=65536 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/artifacts/$$f- $(FUZZ_ARGS) \
			$(FUZZ_BUILD)/corpus/$$f test/fuzz/corpus/$$f \
			> $(FUZZ_BUILD)/fuzz-$$f.log 2>&1; then \
			grep -A30 "^==[0-9]*==ERROR\|^fuzz:\|SUMMARY" $(FUZZ_BUILD)/fuzz-$$f.log | head -60; \
			echo "fuzz-$$f: finding; see $(FUZZ_BUILD)/fuzz-$$f.log and $(FUZZ_BUILD)/artifacts/"; \
			exit 1; \
		fi; \
		grep "stat::number_of_executed_units\|stat::peak_rss_mb" $(FUZZ_BUILD)/fuzz-$$f.log; \
	done

# Each harness over its committed corpus once (part of make test).
fuzz-regress: fuzz-build
	@set -e; for f in $(FUZZERS); do \
		echo "== fuzz-$$f: corpus regression ($$(ls test/fuzz/corpus/$$f | wc -l) inputs)"; \
		$(FUZZ_ENV) $(FUZZ_BUILD)/test/fuzz/fuzz-$$f -timeout=20 test/fuzz/corpus/$$f/* \
			> $(FUZZ_BUILD)/regress-$$f.log 2>&1 || \
			{ tail -40 $(FUZZ_BUILD)/regress-$$f.log; echo "fuzz-$$f: corpus regression failed"; exit 1; }; \
	done

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m 0755 $(BINS) $(DESTDIR)$(SBINDIR)/
	$(if $(MAN8),install -m 0644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/)
	$(if $(MAN5),install -m 0644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/)
	install -d $(DESTDIR)$(UNITDIR)
	install -m 0644 systemd/uffd-manager.socket $(DESTDIR)$(UNITDIR)/
	sed 's|/usr/local/sbin|$(SBINDIR)|g' systemd/uffd-manager.service > $(DESTDIR)$(UNITDIR)/uffd-manager.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/uffd-manager.service

uninstall:
	rm -f $(addprefix $(DESTDIR)$(SBINDIR)/,$(notdir $(BINS)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN8)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(MAN5)))
	rm -f $(DESTDIR)$(UNITDIR)/uffd-manager.socket $(DESTDIR)$(UNITDIR)/uffd-manager.service

clean:
	rm -rf $(BUILD) build-asan $(FUZZ_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
