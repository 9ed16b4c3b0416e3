"""Sign-in: the embedded OAuth 2.0 issuer's endpoints (token, discovery, authorization) and the
login pages."""
