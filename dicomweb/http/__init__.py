"""HTTP plumbing of the gateway: the error, metrics and audit middleware, forwarding and TLS,
bearer-token authorization, DICOM JSON/XML responses and their negotiation, the app's typed
keys, the loopback client to Orthanc."""
