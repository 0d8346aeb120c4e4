# Fault injection on its own (also part of make test): PostgreSQL killed,
# stalled and restarted under traffic, zones full, a worker killed
# mid-request, the log disk full.
#
#   make faults

.PHONY: faults

faults: deps module guard
	prove t/040-database-outage.t t/140-faults.t
