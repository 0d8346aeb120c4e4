# valgrind (memcheck) over the unit tests: the nginx-agnostic code (JWT,
# JWKS, tiers, problem+json, signing, request parsing, rate limits, admin
# bodies) with its real inputs; any error or definite leak fails.
#
#   make test-valgrind
#
# The nginx glue runs under AddressSanitizer and LeakSanitizer instead
# (make test-asan): under valgrind nginx's workers lose their process
# titles, by which the test harness finds them, and the suite's timings
# (timeouts, rate windows) do not survive a 20 to 50 times slowdown.

VALGRIND     = valgrind --quiet --error-exitcode=1 --leak-check=full \
               --errors-for-leak-kinds=definite --show-leak-kinds=definite

.PHONY: test-valgrind

test-valgrind: unit
	@pass=0; fail=0; for t in $(UNIT_TESTS); do \
	    if $(VALGRIND) $$t > $$t.valgrind.log 2>&1; then \
	        echo "valgrind: $$t: no error, no definite leak"; \
	        pass=$$((pass + 1)); \
	    else \
	        echo "valgrind: $$t: FAILED"; cat $$t.valgrind.log; \
	        fail=$$((fail + 1)); \
	    fi; \
	done; echo "valgrind: $$pass passed, $$fail failed"; [ $$fail -eq 0 ]
