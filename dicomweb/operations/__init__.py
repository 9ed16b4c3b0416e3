"""The gateway's operations: metrics, the audit records it writes and the audit log API,
the worker processes, the deletion of studies and series (kept in the audit log, collected
by ``vna gc`` after the grace period)."""
