# Coverage: line and branch coverage of src/ and ngx_tenant_module.c by
# the unit tests and the whole prove suite (gcov, lcov).
#
#   make coverage       build/cov/summary.txt and build/cov/html/index.html
#
# The module is built with --coverage into build/cov/nginx and loaded by
# Debian's nginx (TENANT_MODULE); every nginx process writes its counts
# when it exits (nginx -s quit, as the tests stop it), the master's
# configuration parsing included.  The workers run as nginx's unprivileged
# user: the object directory is made writable for them, and the suite runs
# with umask 000 so that a count file the master creates stays writable.

COV_DIR      = $(BUILD)/cov
COV_BUILD    = $(COV_DIR)/nginx
COV_MODULE   = $(COV_BUILD)/objs/ngx_tenant_module.so
COV_CC_OPT   = -g -O0 --coverage $(NGX_CC_OPT)
COV_UNITS    = $(patsubst t/unit/%.c,$(COV_DIR)/unit/%,$(wildcard t/unit/test_*.c))
# Branches that macros add to a line and that are not the module's
# decisions are not counted: the log level test of ngx_log_error() and
# ngx_log_debug*(), the NULL half of jansson's json_is_*(), the loop of
# json_object_foreach(), the UNSET test of ngx_conf_merge_*_value().
LCOV_EXCL_BR = LCOV_EXCL_BR_LINE|ngx_log_error|ngx_log_debug|json_is_|json_object_foreach|ngx_conf_merge_
LCOV         = lcov --quiet --rc lcov_branch_coverage=1 \
               --rc 'lcov_excl_br_line=$(LCOV_EXCL_BR)'

.PHONY: coverage coverage-module

coverage-module: $(COV_MODULE)

$(COV_BUILD)/objs/Makefile: config
	rm -rf $(COV_BUILD)
	mkdir -p $(COV_DIR)
	cp -r $(NGX_SRC) $(COV_BUILD)
	cd $(COV_BUILD) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(COV_CC_OPT)" --with-ld-opt="--coverage" \
	        --add-dynamic-module=$(CURDIR) > configure.log 2>&1 \
	    || { tail -20 configure.log; exit 1; }

$(COV_MODULE): $(COV_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(COV_BUILD) -f objs/Makefile modules

# one directory per unit test: their objects (and .gcda) do not collide
$(COV_DIR)/unit/%: t/unit/%.c $(UNIT_SRCS) $(wildcard src/tenant_*.h) t/unit/tap.h
	@mkdir -p $@.d
	cd $@.d && $(CC) $(UNIT_CFLAGS:-Isrc=-I$(CURDIR)/src) -O0 --coverage \
	    -I$(CURDIR)/t/unit -o $(CURDIR)/$@ $(CURDIR)/$< \
	    $(addprefix $(CURDIR)/,$(UNIT_SRCS)) $(UNIT_LIBS)

coverage: deps module coverage-module $(COV_UNITS) guard
	find $(COV_DIR) -name '*.gcda' -delete
	prove --exec "" $(COV_UNITS)
	chmod -R a+rwX $(COV_BUILD)/objs/addon
	umask 000 && TENANT_MODULE=$(CURDIR)/$(COV_MODULE) prove -j1 t/
	$(LCOV) --capture --directory $(COV_DIR) --output-file $(COV_DIR)/all.info
	$(LCOV) --extract $(COV_DIR)/all.info '$(CURDIR)/src/*' \
	    '$(CURDIR)/ngx_tenant_module.c' --output-file $(COV_DIR)/tenant.info
	lcov --rc lcov_branch_coverage=1 --list $(COV_DIR)/tenant.info \
	    > $(COV_DIR)/summary.txt
	lcov --rc lcov_branch_coverage=1 --summary $(COV_DIR)/tenant.info \
	    2>&1 | grep -v '^Reading' | tee -a $(COV_DIR)/summary.txt
	genhtml --quiet --branch-coverage --output-directory $(COV_DIR)/html \
	    $(COV_DIR)/tenant.info
	@echo "coverage: $(COV_DIR)/summary.txt, $(COV_DIR)/html/index.html"
