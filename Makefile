# One Makefile for the whole project. `make` builds bin/; `make san` builds bin-san/ with
# AddressSanitizer and UndefinedBehaviorSanitizer; `make fuzz` builds bin-fuzz/ with clang and runs
# the libFuzzer targets; `make run` and `make test` set everything up.

CC      ?= cc
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
# libcrypto (OpenSSL, which libmongoc-dev and libnats already bring) derives an nkey's public key;
# gnutls (which libmicrohttpd brings) hashes the API tokens.
PKGS    := libpq libmongoc-1.0 libnats jansson libmicrohttpd uuid gnutls libcrypto

WARN    := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 \
           -Wno-format-truncation
ifneq ($(CI),)
WARN    += -Werror
endif
ifneq ($(WERROR),)
WARN    += -Werror
endif

ifeq ($(SAN),1)
OUT     := build-san
BIN     := bin-san
OPT     := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDSAN   := -fsanitize=address,undefined
else
OUT     := build
BIN     := bin
OPT     := -O2 -g
LDSAN   :=
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS  += -std=c17 -D_GNU_SOURCE $(OPT) $(WARN) -Icommon -MMD -MP -DVERSION='"$(VERSION)"' $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
LDFLAGS += $(LDSAN)

COMMON_SRC   := $(wildcard common/*.c)
USER_API_SRC := $(filter-out user-api/main.c,$(wildcard user-api/*.c))
RELAY_SRC    := $(filter-out outbox-relay/main.c,$(wildcard outbox-relay/*.c))
CONSUMER_SRC := $(filter-out notification-consumer/main.c,$(wildcard notification-consumer/*.c))
AUDIT_SRC    := $(filter-out auditor/main.c,$(wildcard auditor/*.c))
MIGRATE_SRC  := $(wildcard migrations/*.c)

obj = $(patsubst %.c,$(OUT)/%.o,$(1))

COMMON_OBJ   := $(call obj,$(COMMON_SRC))
USER_API_OBJ := $(call obj,$(USER_API_SRC))
RELAY_OBJ    := $(call obj,$(RELAY_SRC))
CONSUMER_OBJ := $(call obj,$(CONSUMER_SRC))
AUDIT_OBJ    := $(call obj,$(AUDIT_SRC))

# Unit tests: test/unit/test_<area>_*.c links the shared code and the code of its area.
UNIT_SRC     := $(wildcard test/unit/test_*.c)
UNIT_BIN     := $(patsubst test/unit/%.c,$(BIN)/unit/%,$(UNIT_SRC))
unit_objs     = $(if $(findstring test_user,$(1)),$(USER_API_OBJ),$(if $(findstring test_relay,$(1)),$(RELAY_OBJ),$(if $(findstring test_consumer,$(1)),$(CONSUMER_OBJ),$(if $(findstring test_audit,$(1)),$(AUDIT_OBJ)))))

# libFuzzer targets (test/fuzz/, docs/testing.md): clang, with libFuzzer's coverage,
# AddressSanitizer and UndefinedBehaviorSanitizer; objects in build-fuzz/, binaries in bin-fuzz/.
# The library code is compiled with -fsanitize=fuzzer-no-link; only the link adds libFuzzer's main.
FUZZ_CC      ?= clang
FUZZ_OUT     := build-fuzz
FUZZ_BIN     := bin-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# The gcc build's warnings, less one clang adds: gcc lets a vprintf-style helper pass its format on,
# clang wants it marked format(printf, n, 0), and the gcc build already checks every call's format.
FUZZ_CFLAGS  := -std=c17 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) \
                -fsanitize=fuzzer-no-link $(WARN) -Wno-unknown-warning-option -Wno-format-nonliteral \
                -Icommon -MMD -MP -DVERSION='"$(VERSION)"'
FUZZ_SRC     := $(wildcard test/fuzz/fuzz_*.c)
FUZZ_TARGETS := $(patsubst test/fuzz/%.c,$(FUZZ_BIN)/%,$(FUZZ_SRC))
# What each target fuzzes beyond common/, which every target links whole (as the unit tests do).
FUZZ_LINK_fuzz_user_input     := user-api/user_input.c
FUZZ_LINK_fuzz_consumer_event := notification-consumer/event.c
FUZZ_LINK_fuzz_http_input     := user-api/write_headers.c
FUZZ_LINK_fuzz_log            :=
fuzz_obj = $(patsubst %.c,$(FUZZ_OUT)/%.o,$(1))
# Objects reached only through the pattern rule's second expansion count as intermediate, which
# make deletes after each link (and builds again next time): they are kept.
.SECONDARY: $(call fuzz_obj,$(FUZZ_SRC) $(COMMON_SRC) user-api/user_input.c notification-consumer/event.c \
	user-api/write_headers.c)

PROGRAMS := $(BIN)/user-api $(BIN)/outbox-relay $(BIN)/notification-consumer $(BIN)/migrate $(BIN)/audit

.PHONY: all san bootstrap run infra test test-unit test-integration test-san clean clean-data check-deps bench chaos install \
	fuzz fuzz-build fuzz-check
all: check-deps $(PROGRAMS) $(UNIT_BIN)

san:
	@$(MAKE) --no-print-directory SAN=1 all

check-deps:
	@pkg-config --exists $(PKGS) || { echo "missing libraries: run 'bash deploy/bootstrap.sh' (or make run / make test), which installs: $$(for p in $(PKGS); do pkg-config --exists $$p || printf '%s ' $$p; done)" >&2; exit 1; }

$(BIN)/user-api: $(call obj,user-api/main.c) $(USER_API_OBJ) $(COMMON_OBJ)
$(BIN)/outbox-relay: $(call obj,outbox-relay/main.c) $(RELAY_OBJ) $(COMMON_OBJ)
$(BIN)/notification-consumer: $(call obj,notification-consumer/main.c) $(CONSUMER_OBJ) $(COMMON_OBJ)
$(BIN)/migrate: $(call obj,$(MIGRATE_SRC)) $(COMMON_OBJ)
$(BIN)/audit: $(call obj,auditor/main.c) $(AUDIT_OBJ) $(COMMON_OBJ)

$(PROGRAMS):
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

.SECONDEXPANSION:
$(BIN)/unit/%: $(OUT)/test/unit/%.o $$(call unit_objs,%) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(OUT)/test/unit/%.o: CFLAGS += -Iuser-api -Ioutbox-relay -Inotification-consumer -Iauditor

$(OUT)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# A missing clang or libFuzzer runtime is an error, never a skip: a link of an empty target says
# which is missing before anything is compiled.
fuzz-check:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "$(FUZZ_CC) is missing: run 'bash deploy/bootstrap.sh' (make test does), which installs clang and libclang-rt-14-dev" >&2; exit 1; }
	@mkdir -p $(FUZZ_OUT)
	@printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >$(FUZZ_OUT)/check.c
	@$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $(FUZZ_OUT)/check $(FUZZ_OUT)/check.c 2>$(FUZZ_OUT)/check.log || { cat $(FUZZ_OUT)/check.log >&2; echo "$(FUZZ_CC) cannot link a libFuzzer target: libFuzzer's runtime is missing; run 'bash deploy/bootstrap.sh' (make test does), which installs libclang-rt-14-dev" >&2; exit 1; }

fuzz-build: fuzz-check check-deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS)

# Each target for FUZZ_SECONDS on its corpus (FUZZ=name for one); test/fuzz/run.sh says how.
fuzz: fuzz-build
	@bash test/fuzz/run.sh -s $(FUZZ_SECONDS) $(FUZZ)

$(FUZZ_BIN)/%: $(FUZZ_OUT)/test/fuzz/%.o $$(call fuzz_obj,$$(FUZZ_LINK_$$*)) $(call fuzz_obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LDLIBS)

$(FUZZ_OUT)/test/fuzz/%.o: FUZZ_CFLAGS += -Iuser-api -Inotification-consumer

$(FUZZ_OUT)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

bootstrap:
	@bash deploy/bootstrap.sh

# The whole system in the foreground: infrastructure, migrations, the three services.
run: bootstrap
	@$(MAKE) --no-print-directory all
	@bash deploy/run.sh

# Only the infrastructure (with the migrations and .run/<process>.env), in the foreground.
infra: bootstrap
	@$(MAKE) --no-print-directory all
	@bash deploy/infra.sh

clean-data:
	@bash deploy/infra.sh clean-data

# The sanitizer build is part of the test: the unit binaries run from bin/ and bin-san/, and the
# tests that scan logs for sanitizer reports (user-api's, the consumer's fetch loop) run on
# bin-san/; the rest of the integration suite runs on bin/ (test/run.sh).
test: bootstrap
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory san
	@$(MAKE) --no-print-directory fuzz-build
	@BIN_DIR=$(BIN) bash test/run.sh

test-unit:
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory san
	@BIN_DIR=$(BIN) bash test/run.sh unit

test-integration:
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory san
	@BIN_DIR=$(BIN) bash test/run.sh integration

# Every test on the sanitizer build (docs/failure-injection.md, "Sanitizers").
test-san: bootstrap
	@$(MAKE) --no-print-directory san
	@BIN_DIR=bin-san bash test/run.sh

# The long failure-injection soak (docs/failure-injection.md): make chaos DURATION=600 SEED=42 [SAN=1]
# With SAN=1 the whole test suite runs on the sanitizer build first.
chaos: bootstrap
	@$(MAKE) --no-print-directory all
ifeq ($(SAN),1)
	@BIN_DIR=$(BIN) bash test/run.sh
endif
	@BIN_DIR=$(BIN) .venv/bin/python test/chaos/chaos.py --duration $(or $(DURATION),300) $(if $(SEED),--seed $(SEED))

# Every benchmark scenario with its baselines; writes bench/results/ (see docs/benchmarks.md).
bench: all
	@bash bench/run.sh

# Installs the binaries and the migrations under $(PREFIX)/lib/user-sync (bin/ and migrations/,
# as in the tree, so migrate finds its files beside it; the names stay out of $(PREFIX)/bin, where
# `migrate` and `audit` would be ambiguous), the systemd units with that path, and the sysusers.d
# file of their users. DESTDIR stages it all for a package. README: "Deploying with systemd".
PREFIX      ?= /usr/local
APPDIR      := $(PREFIX)/lib/user-sync
UNITDIR     ?= /etc/systemd/system
SYSUSERSDIR ?= /etc/sysusers.d
install: check-deps $(PROGRAMS)
	install -d $(DESTDIR)$(APPDIR)/bin $(DESTDIR)$(APPDIR)/migrations $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR)
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(APPDIR)/bin/
	install -m 0644 migrations/*.sql $(DESTDIR)$(APPDIR)/migrations/
	for u in deploy/systemd/*.service deploy/systemd/*.target; do \
	    sed 's#/usr/local/lib/user-sync#$(APPDIR)#g' $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} && \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; done
	install -m 0644 deploy/systemd/user-sync.sysusers $(DESTDIR)$(SYSUSERSDIR)/user-sync.conf

clean:
	rm -rf build build-san bin bin-san build-fuzz bin-fuzz

-include $(shell find build build-san build-fuzz -name '*.d' 2>/dev/null)
