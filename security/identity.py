"""The security package's second public face: who a caller is. Staff users and their
passwords, OAuth clients, bearer-token validation (local and remote JWKS, scopes), the
embedded OAuth2 issuer and its authorization codes with PKCE. Kept apart from
:mod:`security.api` because it loads authlib and joserfc, which Orthanc's embedded
interpreter must not."""

from sqlalchemy import MetaData

from security import authorization, clients, users
from security.authorization import (
    AuthorizationRequest,
    AuthorizationStore,
    Grant,
    valid_code_challenge,
)
from security.clients import Client, ClientRegistry
from security.issuer import DEFAULT_LIFETIME, EmbeddedIssuer
from security.tokens import (
    BEARER_ERRORS,
    SCOPES,
    InsufficientScope,
    InvalidToken,
    MissingToken,
    Principal,
    RemoteJwks,
    TokenValidator,
    TrustedIssuer,
)
from security.users import MIN_PASSWORD_LENGTH, User, UserRegistry

# the tables this face's modules own in the catalog database (deploy/schema.py)
table_metadata: tuple[MetaData, ...] = (
    users.metadata,
    clients.metadata,
    authorization.metadata,
)

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "Client",
    "ClientRegistry",
    "User",
    "UserRegistry",
    "BEARER_ERRORS",
    "DEFAULT_LIFETIME",
    "SCOPES",
    "AuthorizationRequest",
    "AuthorizationStore",
    "EmbeddedIssuer",
    "Grant",
    "InsufficientScope",
    "InvalidToken",
    "MissingToken",
    "Principal",
    "RemoteJwks",
    "TokenValidator",
    "TrustedIssuer",
    "table_metadata",
    "valid_code_challenge",
]
