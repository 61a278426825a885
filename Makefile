# alloy — build, test, demo.
#
#   make            liballoy.a, liballoy.so, alloy.pc, the alloy command and its man page
#                   alloy.1 (from the verbs' --help), in build/
#   make demo       installs dependencies, then trains a small model on local text and samples
#   make test       installs dependencies (test oracles too), builds, runs every test
#   make check      builds, runs a fast subset (CHECK_TESTS): the edit-compile-test loop
#   make asan       the same tests, built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      benchmarks (bench/*_bench.sh; C programs bench/*.c are built in build/bench/)
#   make install    PREFIX=/usr/local (and DESTDIR): the command, the library, its headers,
#                   alloy.pc, the man page and the bash completion; make uninstall removes them

BUILD    ?= build
PREFIX   ?= /usr/local
CC       ?= cc
VERSION  := 0.1.0
PKGS     := openblas libcjson libpcre2-8 libutf8proc yaml-0.1 zlib libzstd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O3 -march=native
WARN     := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter -Wno-psabi
CFLAGS   ?= $(OPT) -g
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC -fopenmp $(WARN) -Iinclude $(PKG_CFLAGS) $(CFLAGS) $(EXTRA_CFLAGS)
LDLIBS   := $(PKG_LIBS) -fopenmp -lm $(EXTRA_LDFLAGS)

LIB_SRC  := $(sort $(wildcard src/*/*.c))
CMD_SRC  := $(sort $(wildcard tools/alloy/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
BENCH_SRC := $(sort $(wildcard bench/*.c))
HDRS     := $(wildcard include/alloy/*.h) $(wildcard src/*/*.h) $(wildcard tools/alloy/*.h) $(wildcard tests/*.h)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CMD_OBJ  := $(CMD_SRC:%.c=$(BUILD)/obj/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib test check asan demo bench install uninstall clean deps test-deps check-deps

all: $(BUILD)/liballoy.a $(BUILD)/liballoy.so $(BUILD)/alloy.pc $(BUILD)/alloy $(BUILD)/alloy.1

lib: $(BUILD)/liballoy.a $(BUILD)/liballoy.so

# Fails early with the command to run when a library is missing (make demo/test install them).
check-deps:
	@pkg-config --exists $(PKGS) || { echo "missing libraries: run scripts/install-deps.sh (as root)" >&2; exit 1; }

$(BUILD)/obj/%.o: %.c $(HDRS) | check-deps
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(ALL_CFLAGS) $(VIS) $(KFLAGS) -c $< -o $@

# the library exports what its public headers declare between ALLOY_BEGIN_DECLS and
# ALLOY_END_DECLS (alloy/base.h), nothing else
$(BUILD)/obj/src/%.o: VIS := -fvisibility=hidden

# kernels: sqrt and friends need not set errno, so their loops vectorise (same results); the
# attention blocks are written for fused multiply-adds (C11 mode turns contraction off)
$(BUILD)/obj/src/kernels/%.o: KFLAGS := -fno-math-errno
$(BUILD)/obj/src/kernels/attention.o: KFLAGS := -fno-math-errno -ffp-contract=fast

$(BUILD)/liballoy.a: $(LIB_OBJ)
	@rm -f $@
	@echo "  AR    $@"
	@ar rcs $@ $^

$(BUILD)/liballoy.so: $(LIB_OBJ)
	@echo "  LD    $@"
	@$(CC) -shared -Wl,-soname,liballoy.so.0 -o $@ $^ $(LDLIBS)

# pkg-config's description of the library as installed under PREFIX; make install writes it
# again for the PREFIX it installs to
ALLOY_PC = printf 'prefix=%s\nincludedir=$${prefix}/include\nlibdir=$${prefix}/lib\n\nName: alloy\nDescription: train, align, fuse and serve transformer language models on the CPU\nVersion: %s\nRequires.private: %s\nCflags: -I$${includedir} -fopenmp\nLibs: -L$${libdir} -lalloy\nLibs.private: -fopenmp -lm\n' \
	'$(PREFIX)' '$(VERSION)' '$(PKGS)'

$(BUILD)/alloy.pc: Makefile
	@mkdir -p $(BUILD)
	@$(ALLOY_PC) > $@

$(BUILD)/alloy: $(CMD_OBJ) $(BUILD)/liballoy.a
	@echo "  LD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $(CMD_OBJ) $(BUILD)/liballoy.a $(LDLIBS)

# the man page: the command's own --help texts, in roff
$(BUILD)/alloy.1: $(BUILD)/alloy scripts/manpage.sh
	@echo "  MAN   $@"
	@bash scripts/manpage.sh $(BUILD)/alloy $@

$(BUILD)/tests/%: tests/%.c tests/harness.h $(BUILD)/liballoy.a $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  TEST  $@"
	@$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(BUILD)/liballoy.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/liballoy.a $(HDRS)
	@mkdir -p $(dir $@)
	@echo "  BENCH $@"
	@$(CC) $(ALL_CFLAGS) -Ibench -o $@ $< $(BUILD)/liballoy.a $(LDLIBS)

deps:
	@bash scripts/install-deps.sh

test-deps:
	@bash scripts/install-deps.sh --test

test: test-deps
	@$(MAKE) --no-print-directory all-tests
	@BUILD=$(BUILD) bash tests/run.sh

.PHONY: all-tests
all-tests: all $(TESTS)

# the edit-compile-test loop: the unit tests of the lower layers (base, kernels, the model
# against its PyTorch twin, tokenizer, data) and a smoke test of the command
CHECK_TESTS ?= test_base test_kernels test_model test_tokenizer test_data test_smoke.sh
check: test-deps
	@$(MAKE) --no-print-directory all $(patsubst %,$(BUILD)/tests/%,$(filter-out %.sh,$(CHECK_TESTS)))
	@BUILD=$(BUILD) TESTS="$(CHECK_TESTS)" bash tests/run.sh

asan: test-deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -march=native" \
		EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" all-tests
	@BUILD=build/asan ALLOY_ASAN=1 bash tests/run.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh

bench: test-deps
	@$(MAKE) --no-print-directory all $(BENCHES)
	@bash bench/run.sh

MAN1DIR  := $(PREFIX)/share/man/man1
COMPDIR  := $(PREFIX)/share/bash-completion/completions
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/alloy \
		$(DESTDIR)$(MAN1DIR) $(DESTDIR)$(COMPDIR)
	install -m 755 $(BUILD)/alloy $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(BUILD)/liballoy.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/liballoy.so $(DESTDIR)$(PREFIX)/lib/liballoy.so.0
	ln -sf liballoy.so.0 $(DESTDIR)$(PREFIX)/lib/liballoy.so
	install -m 644 include/alloy/*.h $(DESTDIR)$(PREFIX)/include/alloy/
	$(ALLOY_PC) > $(DESTDIR)$(PREFIX)/lib/pkgconfig/alloy.pc
	install -m 644 $(BUILD)/alloy.1 $(DESTDIR)$(MAN1DIR)/alloy.1
	install -m 644 scripts/alloy.bash-completion $(DESTDIR)$(COMPDIR)/alloy
	@[ -n "$(DESTDIR)" ] || [ "$$(id -u)" != 0 ] || ! command -v ldconfig >/dev/null || ldconfig

# removes exactly what install put there (the folders only when they are left empty)
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/alloy $(DESTDIR)$(PREFIX)/lib/liballoy.a $(DESTDIR)$(PREFIX)/lib/liballoy.so \
		$(DESTDIR)$(PREFIX)/lib/liballoy.so.0 $(DESTDIR)$(PREFIX)/lib/pkgconfig/alloy.pc \
		$(DESTDIR)$(MAN1DIR)/alloy.1 $(DESTDIR)$(COMPDIR)/alloy
	rm -f $(patsubst include/alloy/%,$(DESTDIR)$(PREFIX)/include/alloy/%,$(wildcard include/alloy/*.h))
	rmdir $(DESTDIR)$(PREFIX)/include/alloy 2>/dev/null || true

clean:
	rm -rf build
