"""QIDO-RS beyond the query model: attributes read from stored headers (includefield) and the
reading worklist's search."""
