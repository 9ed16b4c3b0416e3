"""HTTP plumbing of the gateway: the error, metrics and audit middleware, forwarding and TLS,
bearer-token authorization, DICOM JSON/XML responses and their negotiation, the loopback
client to Orthanc (the app's typed keys are in ``dicomweb/appkeys.py``)."""
