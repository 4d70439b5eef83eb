//! Unit tests of the event log: sequence numbers across reopen, bounds, drops, acks, paging.
