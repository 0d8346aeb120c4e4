# ngx_tenant_module: build, run and test.
#
#   make            build build/nginx/objs/ngx_tenant_module.so
#   make run        install what is missing, build, migrate, start the gateway
#   make test       the whole suite (unit + integration), as CI runs it
#   make guard      the blocking-call guard the integration tests preload
#   make stop       stop the embedded PostgreSQL of make run
#   make migrate    apply pending migrations to DATABASE_URL
#   make bench      gateway vs plain proxy_pass (bench/run.sh)
#   make scale      three gateways, one PostgreSQL, one Redis on this
#                   machine: global limit, propagation, Redis stopped
#                   (scripts/scale.sh)
#   make smoke      the deployment guide's smoke tests against BASE_URL
#   make image-test build the Dockerfile with buildah and run the image
#                   (t/160-image.t; root; in make test with IMAGE_TEST=1)
#
# Hardening targets (fuzz, sanitizers, coverage, soak) live in mk/*.mk.

SHELL       := /bin/bash

NGX_SRC     ?= /usr/share/nginx/src
BUILD       ?= build
NGX_BUILD    = $(BUILD)/nginx
MODULE       = $(NGX_BUILD)/objs/ngx_tenant_module.so
CC          ?= cc

# Extra warnings on top of nginx's own -W -Wall -Werror.
NGX_CC_OPT  ?= -Wextra -Wno-unused-parameter -Werror

MODULE_SRCS  = config ngx_tenant_module.c $(wildcard src/*.c src/*.h)

UNIT_CFLAGS  = -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
               -g -O1 -Isrc
UNIT_LIBS    = -ljansson -lcrypto
UNIT_SRCS    = $(wildcard src/tenant_*.c)
UNIT_TESTS   = $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(wildcard t/unit/test_*.c))

# t/guard/blockguard.c: preloaded into nginx by t/lib/TenantTest.pm;
# blockguard_test calls what it must report (t/000-nonblocking.t).
GUARD_CFLAGS = -std=gnu11 -Wall -Wextra -Werror -g -O1
GUARD        = $(BUILD)/guard/blockguard.so
GUARD_TEST   = $(BUILD)/guard/blockguard_test

.PHONY: all module unit guard deps run stop test migrate bench bench-provision \
        scale smoke image-test clean

all: module

module: $(MODULE)

$(NGX_BUILD)/objs/Makefile: config
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -r $(NGX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(NGX_CC_OPT)" \
	        --add-dynamic-module=$(CURDIR) > configure.log 2>&1 \
	    || { tail -20 configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules

unit: $(UNIT_TESTS)

$(BUILD)/unit/%: t/unit/%.c $(UNIT_SRCS) $(wildcard src/tenant_*.h) t/unit/tap.h
	@mkdir -p $(BUILD)/unit
	$(CC) $(UNIT_CFLAGS) -It/unit -o $@ $< $(UNIT_SRCS) $(UNIT_LIBS)

guard: $(GUARD) $(GUARD_TEST)

$(GUARD): t/guard/blockguard.c
	@mkdir -p $(BUILD)/guard
	$(CC) $(GUARD_CFLAGS) -fPIC -shared -o $@ $< -ldl

$(GUARD_TEST): t/guard/blockguard_test.c
	@mkdir -p $(BUILD)/guard
	$(CC) $(GUARD_CFLAGS) -I$(shell pg_config --includedir) -o $@ $< -lpq

deps:
	scripts/deps.sh

run: deps module
	scripts/run.sh

stop:
	scripts/stop.sh

migrate:
	scripts/migrate.sh

bench: module
	bench/run.sh

bench-provision: module
	bench/provision.sh

scale: module
	scripts/scale.sh

smoke:
	scripts/smoke.sh

test: deps module unit guard
	prove --exec "" $(UNIT_TESTS)
	prove -j1 --timer t/

image-test: deps
	IMAGE_TEST=1 prove -v t/160-image.t

clean:
	rm -rf $(BUILD)

# Hardening: one file per concern (mk/fuzz.mk, mk/asan.mk, ...).
include $(wildcard mk/*.mk)
