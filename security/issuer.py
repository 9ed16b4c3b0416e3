"""The embedded token issuer's key material and access-token minting.

For the embedded default the archive is its own OAuth 2.0 authorization server. This
module holds the part every later piece needs: one EC P-256 signing key, created on first
use under ``<home>/keys/issuer-signing.pem`` (0600, never overwritten), its public JWKS,
and :meth:`EmbeddedIssuer.mint`, which signs RFC 9068 access tokens (ES256, ``typ``
``at+jwt``), and :meth:`EmbeddedIssuer.mint_id_token`, which signs OpenID Connect ID
tokens for people who logged in. Client registration, the token endpoint and OIDC
discovery build on it.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from security.keys import write_secret_file
from security.tokens import StaticJwks, TrustedIssuer

__all__ = ["DEFAULT_LIFETIME", "ID_TOKEN_LIFETIME", "SIGNING_KEY_FILE", "EmbeddedIssuer"]

SIGNING_KEY_FILE = "issuer-signing.pem"
DEFAULT_LIFETIME = 300
"""Seconds; access tokens are short-lived (design: "short lifetime")."""
ID_TOKEN_LIFETIME = 300


class EmbeddedIssuer:
    """Signs access tokens with the archive's own key.

    Parameters
    ----------
    key : ECKey
        The private P-256 key.
    issuer : str
        ``iss`` of every token (the gateway's public base URL).
    audience : str
        ``aud`` of every token (the DICOMweb resource server).
    """

    def __init__(self, key: ECKey, issuer: str, audience: str) -> None:
        if not key.is_private:
            raise ValueError("the issuer needs the private key")
        self._key = key
        self.issuer = issuer
        self.audience = audience
        self.kid = key.thumbprint()

    @classmethod
    def open_or_create(cls, keys_dir: Path, issuer: str, audience: str) -> EmbeddedIssuer:
        """Load ``<keys_dir>/issuer-signing.pem``, generating it on first use.

        Two processes starting together keep one key: the file is linked into place
        atomically and never replaced.
        """
        path = keys_dir / SIGNING_KEY_FILE
        if not path.exists():
            fresh = ECKey.generate_key("P-256", private=True)
            with contextlib.suppress(FileExistsError):
                write_secret_file(path, fresh.as_pem(private=True))
        key = ECKey.import_key(path.read_bytes())
        return cls(key, issuer, audience)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document (RFC 7517) for ``jwks_uri``."""
        public = self._key.as_dict(private=False)
        public.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        return {"keys": [public]}

    def trusted(self, *, institution_claim: str = "institution") -> TrustedIssuer:
        """This issuer as the gateway's token validator trusts it."""
        return TrustedIssuer(
            issuer=self.issuer,
            jwks=StaticJwks(self.jwks()),
            audience=self.audience,
            institution_claim=institution_claim,
        )

    def mint(
        self,
        *,
        subject: str,
        institution: str,
        scopes: Iterable[str],
        client_id: str | None = None,
        lifetime: int = DEFAULT_LIFETIME,
        now: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Sign an access token (RFC 9068 section 2.2 claims).

        Parameters
        ----------
        subject : str
            ``sub``: the client id for client_credentials, else the user.
        institution : str
            The institution the principal acts for.
        scopes : iterable of str
            Granted scopes, emitted space-separated in ``scope``.
        lifetime : int
            Seconds until ``exp``.
        now : float, optional
            Issue time (tests).
        extra : dict, optional
            More claims; they cannot replace the registered ones above.
        """
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = dict(extra or {})
        claims.update(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": self.audience,
                "client_id": client_id or subject,
                "iat": issued,
                "nbf": issued,
                "exp": issued + lifetime,
                "jti": secrets.token_urlsafe(16),
                "scope": " ".join(sorted(set(scopes))),
                "institution": institution,
            }
        )
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        return jwt.encode(header, claims, self._key, algorithms=["ES256"])

    def mint_id_token(
        self,
        *,
        subject: str,
        client_id: str,
        auth_time: int,
        nonce: str | None = None,
        claims: dict[str, Any] | None = None,
        lifetime: int = ID_TOKEN_LIFETIME,
        now: float | None = None,
    ) -> str:
        """Sign an ID token (OpenID Connect Core 1.0 section 2).

        ``aud`` and ``azp`` are the client; ``typ`` is plain ``JWT`` so that no resource
        server mistakes it for an access token (which must be ``at+jwt``).
        """
        issued = int(time.time() if now is None else now)
        body: dict[str, Any] = dict(claims or {})
        body.update(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": client_id,
                "azp": client_id,
                "iat": issued,
                "exp": issued + lifetime,
                "auth_time": auth_time,
            }
        )
        if nonce:
            body["nonce"] = nonce
        header = {"alg": "ES256", "typ": "JWT", "kid": self.kid}
        return jwt.encode(header, body, self._key, algorithms=["ES256"])

    def read_id_token(self, token: str) -> dict[str, Any] | None:
        """The claims of an ID token this issuer signed (expired ones too), else None.

        For ``id_token_hint`` at logout (OIDC RP-Initiated Logout 1.0 section 2), where
        an expired token is still a valid hint.
        """
        try:
            decoded = jwt.decode(token, self._key, algorithms=["ES256"])
        except (JoseError, ValueError, TypeError):
            return None
        claims = dict(decoded.claims)
        if claims.get("iss") != self.issuer or decoded.header.get("typ") != "JWT":
            return None
        return claims
