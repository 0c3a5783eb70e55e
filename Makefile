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

PKGS	  := libprotobuf-c libnl-3.0 libnl-genl-3.0 json-c
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

COMMON_O  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard proto/*.c)) $(PB_O)
MANAGER_O := $(patsubst %.c,$(BUILD)/%.o,$(filter-out manager/main.c,$(wildcard manager/*.c)))
INJECT_O  := $(patsubst %.c,$(BUILD)/%.o,$(filter-out inject/main.c,$(wildcard inject/*.c)))
UNIT_O	  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/unit/*.c))
INTEG_O	  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/integration/*.c))
TESTLIB_O := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/lib/*.c))
HELPERS	  := $(patsubst test/helpers/%.c,$(BUILD)/test/helpers/%,$(wildcard test/helpers/*.c))
BENCH_O	  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard test/bench/*.c))
BENCH	  := $(BUILD)/test/bench/uffd-bench

LIBCOMMON  := $(BUILD)/libcommon.a
LIBMANAGER := $(BUILD)/libmanager.a
LIBINJECT  := $(BUILD)/libinject.a
BINS	   := $(BUILD)/uffd-manager $(BUILD)/uffd-inject
TESTS	   := $(BUILD)/test/unit-tests $(if $(INTEG_O),$(BUILD)/test/integration-tests)

MAN8	:= $(wildcard man/*.8)
MAN5	:= $(wildcard man/*.5)

.PHONY: all deps check test demo install uninstall asan clean help
.PHONY: bench stress
.DELETE_ON_ERROR:
.SECONDARY: $(PB_C) $(PB_H)

all: $(BINS)

help:
	@echo "make            build uffd-manager and uffd-inject into $(BUILD)/"
	@echo "make deps       install missing Debian build dependencies (apt-get)"
	@echo "make check      deps, build, then every test"
	@echo "make demo       deps, build, then show the tools on real data"
	@echo "make bench      deps, build, then the benchmarks; figures into BENCHMARKS.md"
	@echo "                (BENCH_QUICK=1: a shorter run)"
	@echo "make stress     the release-race tests at full size: 600 processes per"
	@echo "                test (3000) and 300 uffd-inject lazy hand-overs (STRESS_N=N)"
	@echo "make asan       build and test with AddressSanitizer and UBSan"
	@echo "make install    install binaries and man pages (PREFIX, DESTDIR)"
	@echo "make clean      remove $(BUILD)/ and build-asan/"

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

# Criterion runs each test in its own process; -j2 fits this 2-core machine.
CRITERION_ARGS ?= -j2

test: $(BINS) $(TESTS) $(HELPERS)
	@set -e; for t in $(TESTS); do \
		echo "== $$t"; \
		UFFD_TEST_BUILD=$(abspath $(BUILD)) $$t $(CRITERION_ARGS); \
	done

check: deps
	@$(MAKE) --no-print-directory test

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH) $(BUILD)/test/helpers/rworkload
	UFFD_TEST_BUILD=$(abspath $(BUILD)) $(BENCH) --md $(CURDIR)/BENCHMARKS.md

# The release-race tests (test/integration/test_release.c) at full size.
STRESS_N ?= 600

stress: deps
	@$(MAKE) --no-print-directory $(BINS) $(BUILD)/test/integration-tests $(BUILD)/test/helpers/workload
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
	rm -rf $(BUILD) build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
