"""People who log in to the embedded issuer (authorization code flow).

A user has a name, the institution they act for, the scopes they may be granted, a
password stored only as a scrypt hash (RFC 7914; memory-hard, so a stolen catalog does
not give the passwords up cheaply) and a failed-login counter: after ``max_failures``
wrong passwords in a row the account is locked for ``lockout_seconds``. The registry
owns one table in the catalog database (its own MetaData, created idempotently).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, replace

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    case,
    select,
    update,
)
from sqlalchemy.engine import Engine

from security.clients import check_scopes
from security.errors import Conflict, InvalidInput, NotFound
from security.transactions import write_transaction

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "LoginOutcome",
    "LoginResult",
    "User",
    "UserRegistry",
    "hash_password",
    "verify_password",
]

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("institution", String(128), nullable=False),
    Column("scopes", String(512), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("last_login", Float, nullable=True),
)

MIN_PASSWORD_LENGTH = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")

# scrypt cost: N=2^15, r=8 (32 MiB, ~0.1 s on the reference machine); the parameters are
# stored with each hash, so raising them later leaves existing hashes verifiable
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# verified when the user does not exist, so that an unknown name costs the same time as
# a wrong password and response times do not tell which names exist
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class User:
    name: str
    institution: str
    scopes: frozenset[str]
    disabled: bool = False
    locked_until: float = 0.0
    last_login: float | None = None


class LoginOutcome(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"  # unknown user or wrong password
    LOCKED = "locked"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class LoginResult:
    outcome: LoginOutcome
    user: User | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.OK


def _user(row: object) -> User:
    return User(
        name=row.name,  # type: ignore[attr-defined]
        institution=row.institution,  # type: ignore[attr-defined]
        scopes=frozenset(row.scopes.split()),  # type: ignore[attr-defined]
        disabled=bool(row.disabled),  # type: ignore[attr-defined]
        locked_until=float(row.locked_until),  # type: ignore[attr-defined]
        last_login=row.last_login,  # type: ignore[attr-defined]
    )


class UserRegistry:
    """Users in the catalog database.

    Parameters
    ----------
    engine : Engine
        The catalog's engine.
    max_failures : int
        Wrong passwords in a row that lock the account.
    lockout_seconds : float
        How long a locked account stays locked.
    """

    def __init__(
        self, engine: Engine, *, max_failures: int = 5, lockout_seconds: float = 900.0
    ) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds

    def add(self, name: str, institution: str, password: str, scopes: str) -> User:
        """Create a user; the password is kept only as its scrypt hash."""
        if not _NAME.match(name):
            raise InvalidInput("a user name is letters, digits and . _ @ - (at most 128)")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        wanted = check_scopes(scopes)
        hashed = hash_password(password)
        with write_transaction(self.engine) as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first():
                raise Conflict(f"a user named {name!r} exists already")
            conn.execute(
                users.insert().values(
                    name=name,
                    institution=institution,
                    scopes=" ".join(sorted(wanted)),
                    password_hash=hashed,
                    disabled=False,
                    failed_logins=0,
                    locked_until=0.0,
                    created_at=time.time(),
                )
            )
        return User(name, institution, wanted)

    def get(self, name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        return _user(row) if row is not None else None

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
        return [_user(row) for row in rows]

    def disable(self, name: str) -> User:
        """Disable a user: no further login, no refresh of their tokens."""
        with self.engine.begin() as conn:
            done = conn.execute(update(users).where(users.c.name == name).values(disabled=True))
        if done.rowcount != 1:
            raise NotFound(f"no user named {name!r}: see `vna user list`")
        found = self.get(name)
        assert found is not None
        return found

    def active(self, name: str) -> User | None:
        """The user if they exist and are not disabled (checked again at token refresh)."""
        found = self.get(name)
        return found if found is not None and not found.disabled else None

    def authenticate(self, name: str, password: str, *, now: float | None = None) -> LoginResult:
        """Check a login; counts failures and locks the account after ``max_failures``.

        An attempt is admitted by one conditional UPDATE before the password is looked
        at: it counts the attempt as a failure, only while the account is neither locked
        nor disabled, and the attempt that reaches the limit locks the account in the
        same statement. So parallel guesses cannot get more than ``max_failures``
        passwords checked, on SQLite or PostgreSQL. A right password then clears the
        count (and a lock that attempts admitted after it set). A refused attempt still
        computes a hash, so that the answer takes as long as any other.
        """
        now = time.time() if now is None else now
        counted = users.c.failed_logins + 1
        reaches = counted >= self.max_failures
        admit = (
            update(users)
            .where(
                users.c.name == name,
                users.c.disabled.is_(False),
                users.c.locked_until <= now,
            )
            .values(
                failed_logins=case((reaches, 0), else_=counted),
                locked_until=case((reaches, now + self.lockout_seconds), else_=0.0),
            )
            .returning(*users.c)
        )
        with self.engine.begin() as conn:
            row = conn.execute(admit).first()
        if row is None:
            verify_password(password, _DUMMY_HASH)
            found = self.get(name)
            if found is None:
                return LoginResult(LoginOutcome.BAD_CREDENTIALS)
            if found.locked_until > now:
                return LoginResult(LoginOutcome.LOCKED, found)
            return LoginResult(LoginOutcome.DISABLED, found)
        user = _user(row)
        if verify_password(password, row.password_hash):
            with self.engine.begin() as conn:
                conn.execute(
                    update(users)
                    .where(users.c.name == name)
                    .values(failed_logins=0, locked_until=0.0, last_login=now)
                )
            return LoginResult(LoginOutcome.OK, replace(user, locked_until=0.0, last_login=now))
        if row.locked_until > now:
            return LoginResult(LoginOutcome.LOCKED, user)
        return LoginResult(LoginOutcome.BAD_CREDENTIALS, user)
