"""The gateway's operations: metrics, the audit records it writes and the audit log API,
the worker processes."""
