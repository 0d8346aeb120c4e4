# libFuzzer targets of the nginx-agnostic parsers (t/fuzz/fuzz_*.c), built
# with clang's libFuzzer, ASan and UBSan against src/tenant_*.c.
#
#   make fuzz-build                 build/fuzz/fuzz_<name>, one per target
#   make fuzz [FUZZ_SECONDS=60]     run each target that long on a copy of
#                                   its corpus (build/fuzz/corpus-<name>);
#                                   fails if any target crashes
#   make fuzz-short                 the same for 10 seconds each (CI)
#   make fuzz FUZZ_TARGETS="jwt admin" FUZZ_SECONDS_jwt=300
#                                   some targets, one of them for longer
#
# The seeds (t/fuzz/corpus/<name>/) and dictionaries (t/fuzz/<name>.dict)
# are in the repository; what a run finds stays under build/fuzz/.

FUZZ_CC       ?= clang
FUZZ_CFLAGS   ?= -g -O1 -fsanitize=fuzzer,address,undefined \
                 -fno-sanitize-recover=undefined -Wall -Wextra
FUZZ_SECONDS  ?= 60
FUZZ_TARGETS  ?= $(patsubst t/fuzz/fuzz_%.c,%,$(wildcard t/fuzz/fuzz_*.c))
FUZZ_BINS      = $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))
FUZZ_DEPS      = $(UNIT_SRCS) $(wildcard src/tenant_*.h) \
                 $(wildcard t/fuzz/*.h) t/unit/jwt_util.h

.PHONY: fuzz-build fuzz fuzz-short

fuzz-build: $(FUZZ_BINS)

$(BUILD)/fuzz/fuzz_%: t/fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p $(BUILD)/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Isrc -o $@ $< $(UNIT_SRCS) $(UNIT_LIBS)

fuzz: fuzz-build
	BUILD=$(BUILD) scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-short:
	$(MAKE) fuzz FUZZ_SECONDS=10
