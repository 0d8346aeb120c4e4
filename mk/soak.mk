# Soak: the gateway under a sustained, mixed, constant-rate load on
# 127.0.0.1 (bench/soak; its header says what it does and what fails it).
#
#   make soak                        300 s at 1000 requests/s, 10,000
#                                    tenants, 100,000 tokens
#   make soak SOAK_SECONDS=60 SOAK_RATE=500
#
# Prints the report and writes it to bench/results/soak-<date>.txt; exits
# non-zero on a 5xx, a status not of its kind, a dead worker, or a
# worker's private memory (RssAnon) growing by 1 MB or more after the
# first 60 s.  SOAK_* variables given to make reach the script through
# the environment.

.PHONY: soak

soak: deps module
	bench/soak
