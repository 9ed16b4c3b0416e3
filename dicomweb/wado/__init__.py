"""WADO-RS and WADO-URI: instance, metadata, frame, bulk data and rendered retrieval, the
caches and read-ahead behind them, transfer syntax negotiation and conversion."""
