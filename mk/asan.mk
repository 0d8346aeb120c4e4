# Sanitizers: nginx itself and the module built with AddressSanitizer and
# UndefinedBehaviorSanitizer, and the whole prove suite run with them.
#
#   make test-asan      build build/asan/nginx/objs/{nginx,ngx_tenant_module.so}
#                       and run prove -j1 t/ with NGINX and TENANT_MODULE
#                       pointing at them
#
# A module built with ASan cannot be loaded by Debian's nginx (the runtime
# must come first), and nginx-dev has the headers only: nginx itself is
# built from the same version's upstream source (scripts/nginx-source.sh,
# from Debian's source archive) with Debian's configure flags.  NGX_DEBUG_PALLOC=1 makes every ngx_palloc a
# malloc of its own, so that ASan sees overflows between pool allocations,
# which nginx's pool allocator otherwise hides.  nonnull-attribute is
# left out: nginx's core passes NULL with length 0 to memcpy (ngx_pstrdup
# of an empty string), harmless and not ours.  Leak checking is left to
# valgrind (make test-valgrind): nginx does not free its cycle at exit by
# design, which LeakSanitizer would report on every worker.

ASAN_BUILD   = $(BUILD)/asan/nginx
ASAN_NGINX   = $(ASAN_BUILD)/objs/nginx
ASAN_MODULE  = $(ASAN_BUILD)/objs/ngx_tenant_module.so
ASAN_CC_OPT  = -g -O1 -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined \
               -fno-sanitize=nonnull-attribute \
               -DNGX_DEBUG_PALLOC=1 $(NGX_CC_OPT)
ASAN_LD_OPT  = -fsanitize=address,undefined

# ASan's reports go to the error log (nginx's stderr): the harness fails
# a test whose log has one.  detect_odr_violation=0: every nginx dynamic
# module defines its own ngx_module_names, by design.
ASAN_ENV     = ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0 \
               UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: asan test-asan

asan: $(ASAN_NGINX)

$(ASAN_BUILD)/objs/Makefile: config
	rm -rf $(ASAN_BUILD)
	scripts/nginx-source.sh $(ASAN_BUILD)
	cd $(ASAN_BUILD) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(ASAN_CC_OPT)" \
	        --with-ld-opt="$(ASAN_LD_OPT)" \
	        --add-dynamic-module=$(CURDIR) > configure.log 2>&1 \
	    || { tail -20 configure.log; exit 1; }

$(ASAN_NGINX): $(ASAN_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(ASAN_BUILD) -f objs/Makefile binary modules

test-asan: deps module asan guard
	$(ASAN_ENV) TENANT_NGINX=$(CURDIR)/$(ASAN_NGINX) \
	    TENANT_MODULE=$(CURDIR)/$(ASAN_MODULE) prove -j1 t/
