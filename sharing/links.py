"""Share links: one study, for a patient or a referring doctor, without an account.

A link is ``<public url>/share/<id>#<secret>``. The id is public (it names the row); the
secret is 256 random bits, kept only as its SHA-256, and travels in the URL fragment, which
browsers never send to a server nor put in a Referer. The share page posts it to
``/share/<id>/open`` and gets back a short-lived token narrowed to the link's study.

A link carries its actions (view; download), an expiry, a use limit, an optional PIN
(scrypt-hashed; wrong PINs lock the link after a configured number of attempts), who
created it, when it was last used and whether it was revoked. Tokens issued for a link
name the pseudo-institution ``share:<id>``; :func:`link_reaches` turns that into "this
one study, while the link is active", so revoking a link also cuts off the tokens it
already issued.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    case,
    exists,
    or_,
    select,
    update,
)

from security.api import Conflict, Forbidden, InvalidInput, NotFound, write_transaction

__all__ = [
    "SHARE_PREFIX",
    "Action",
    "LinkGone",
    "LinkLocked",
    "NewLink",
    "PinRequired",
    "ShareLink",
    "ShareLinks",
    "WrongPin",
    "link_reaches",
    "share_institution",
]

SHARE_PREFIX = "share:"
"""Institution claim of tokens issued for a link; no real institution may use it."""

metadata = MetaData()

share_links = Table(
    "share_links",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("study_uid", String(64), nullable=False, index=True),
    Column("institution", String(128), nullable=False),
    Column("actions", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("max_uses", Integer),
    Column("uses", Integer, nullable=False, default=0),
    Column("pin_salt", LargeBinary(16)),
    Column("pin_hash", LargeBinary(32)),
    Column("pin_failures", Integer, nullable=False, default=0),
    Column("locked_at", Float),
    Column("revoked_at", Float),
    Column("revoked_by", String(256)),
    Column("last_used_at", Float),
)


class Action(enum.StrEnum):
    VIEW = "view"
    DOWNLOAD = "download"


class LinkGone(Forbidden):
    """Expired, revoked or used up: the page says which, and that the sender can renew it."""


class LinkLocked(Forbidden):
    """Too many wrong PINs."""


class PinRequired(Forbidden):
    """The link has a PIN and none was given."""


class WrongPin(Forbidden):
    def __init__(self, attempts_left: int) -> None:
        super().__init__(
            f"wrong PIN; {attempts_left} attempt(s) left before the link locks"
            if attempts_left
            else "wrong PIN; the link is now locked: ask the sender for a new link"
        )
        self.attempts_left = attempts_left

    @property
    def details(self) -> Mapping[str, object]:
        return {"attempts_left": self.attempts_left}


@dataclass(frozen=True, slots=True)
class ShareLink:
    id: str
    study_uid: str
    institution: str
    actions: frozenset[Action]
    created_at: float
    created_by: str
    expires_at: float
    max_uses: int | None
    uses: int
    has_pin: bool
    pin_failures: int
    locked: bool
    revoked_at: float | None
    last_used_at: float | None

    def state(self, now: float | None = None) -> str:
        """active, revoked, expired, used-up or locked."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.locked:
            return "locked"
        if self.expires_at <= now:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used-up"
        return "active"


@dataclass(frozen=True, slots=True)
class NewLink:
    """A link just created: the secret exists only here, never again."""

    link: ShareLink
    secret: str

    def url(self, public_url: str) -> str:
        return f"{public_url.rstrip('/')}/share/{self.link.id}#{self.secret}"


def share_institution(link_id: str) -> str:
    return SHARE_PREFIX + link_id


def link_reaches(
    study_uid: ColumnElement[str], institution: str, now: float | None = None
) -> ColumnElement[bool]:
    """SQL condition for a ``share:<id>`` principal: the link's study, while it is active.

    Use limit and PIN are checked when the link is opened; revocation and expiry also end
    tokens already issued.
    """
    link_id = institution.removeprefix(SHARE_PREFIX)
    now = time.time() if now is None else now
    return exists(
        select(share_links.c.id).where(
            and_(
                share_links.c.id == link_id,
                share_links.c.study_uid == study_uid,
                share_links.c.revoked_at.is_(None),
                share_links.c.locked_at.is_(None),
                share_links.c.expires_at > now,
            )
        )
    )


def _sha256(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _pin_hash(pin: str, salt: bytes) -> bytes:
    # a PIN is short: a memory-hard KDF makes an offline guess of a stolen table slow
    return hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _row_to_link(row: object) -> ShareLink:
    r = row._mapping  # type: ignore[attr-defined]
    return ShareLink(
        id=r["id"],
        study_uid=r["study_uid"],
        institution=r["institution"],
        actions=frozenset(Action(a) for a in r["actions"].split()),
        created_at=r["created_at"],
        created_by=r["created_by"],
        expires_at=r["expires_at"],
        max_uses=r["max_uses"],
        uses=r["uses"],
        has_pin=r["pin_hash"] is not None,
        pin_failures=r["pin_failures"],
        locked=r["locked_at"] is not None,
        revoked_at=r["revoked_at"],
        last_used_at=r["last_used_at"],
    )


def _new_link_id() -> str:
    """96 random bits, base64url, never starting with "-": operators pass ids to `vna share
    revoke ID`, where an argument starting with "-" would read as an option."""
    while (link_id := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return link_id


class ShareLinks:
    """Share links in the catalog database."""

    def __init__(self, engine: Engine, *, pin_attempts: int = 5) -> None:
        # the table is made by the migrations (archive.migrations), like the grants'
        self.engine = engine
        self.pin_attempts = pin_attempts

    def create(
        self,
        study_uid: str,
        institution: str,
        created_by: str,
        *,
        expires_in: float,
        actions: Iterable[Action | str] = (Action.VIEW,),
        max_uses: int | None = None,
        pin: str | None = None,
        now: float | None = None,
    ) -> NewLink:
        """A new link; the caller has checked that ``institution`` reaches the study."""
        now = time.time() if now is None else now
        wanted = frozenset(Action(a) for a in actions) | {Action.VIEW}
        if expires_in <= 0:
            raise InvalidInput("a share link needs an expiry in the future (e.g. 7d)")
        if max_uses is not None and max_uses < 1:
            raise InvalidInput("--max-uses must be at least 1")
        if pin is not None and not (4 <= len(pin) <= 64):
            raise InvalidInput("a PIN has 4 to 64 characters")
        if institution.startswith(SHARE_PREFIX):
            raise Forbidden("a share link cannot create share links")
        link_id = _new_link_id()
        secret = secrets.token_urlsafe(32)  # 256 bits
        salt = secrets.token_bytes(16) if pin is not None else None
        values = {
            "id": link_id,
            "secret_sha256": _sha256(secret),
            "study_uid": study_uid,
            "institution": institution,
            "actions": " ".join(sorted(wanted)),
            "created_at": now,
            "created_by": created_by,
            "expires_at": now + expires_in,
            "max_uses": max_uses,
            "uses": 0,
            "pin_salt": salt,
            "pin_hash": _pin_hash(pin, salt) if pin is not None and salt else None,
            "pin_failures": 0,
        }
        with self.engine.begin() as conn:
            conn.execute(share_links.insert().values(**values))
        return NewLink(self.get(link_id), secret)

    def get(self, link_id: str) -> ShareLink:
        with self.engine.connect() as conn:
            row = conn.execute(select(share_links).where(share_links.c.id == link_id)).first()
        if row is None:
            raise NotFound("no such share link")
        return _row_to_link(row)

    def list(self, institution: str | None = None) -> list[ShareLink]:
        stmt = select(share_links).order_by(share_links.c.created_at)
        if institution is not None:
            stmt = stmt.where(share_links.c.institution == institution)
        with self.engine.connect() as conn:
            return [_row_to_link(r) for r in conn.execute(stmt)]

    def revoke(self, link_id: str, by: str, institution: str | None = None) -> ShareLink:
        """Revoke; with ``institution``, only that institution's links (else NotFound)."""
        where = [share_links.c.id == link_id]
        if institution is not None:
            where.append(share_links.c.institution == institution)
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(share_links).where(*where)).first()
            if row is None:
                raise NotFound("no such share link")
            if row.revoked_at is not None:
                raise Conflict("this share link is already revoked")
            conn.execute(
                update(share_links).where(*where).values(revoked_at=time.time(), revoked_by=by)
            )
        return self.get(link_id)

    def open(
        self, link_id: str, secret: str, pin: str | None, now: float | None = None
    ) -> ShareLink:
        """Check secret, state and PIN, count one use; raise what the visitor must be told.

        A wrong secret answers exactly like an unknown id (NotFound). Every counter
        changes by one conditional UPDATE (compare-and-set in SQL), each its own short
        write transaction, and only while the link is live: a wrong PIN is counted (the
        one that reaches ``pin_attempts`` locks the link in the same statement), a use is
        counted below the use limit. The PIN is checked before its attempt is counted, so
        that parallel visitors with the right PIN all get in; but an answer depends on
        the PIN only through an UPDATE that found the link unlocked, and once it is locked
        every answer is "locked": parallel guesses learn nothing about more than
        ``pin_attempts`` wrong PINs. A right PIN clears the count of wrong ones.
        """
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(select(share_links).where(share_links.c.id == link_id)).first()
        if row is None or not hmac.compare_digest(_sha256(secret), bytes(row.secret_sha256)):
            raise NotFound("no such share link")
        self._check_state(_row_to_link(row), now)
        live = [
            share_links.c.id == link_id,
            share_links.c.revoked_at.is_(None),
            share_links.c.locked_at.is_(None),
            share_links.c.expires_at > now,
        ]
        counted: dict[str, Any] = {}
        if row.pin_hash is not None:
            if not pin:
                raise PinRequired("this link needs its PIN")
            if not hmac.compare_digest(_pin_hash(pin, bytes(row.pin_salt)), bytes(row.pin_hash)):
                failures = share_links.c.pin_failures + 1
                count = (
                    update(share_links)
                    .where(*live)
                    .values(
                        pin_failures=failures,
                        locked_at=case((failures >= self.pin_attempts, now), else_=None),
                    )
                    .returning(share_links.c.pin_failures)
                )
                with self.engine.begin() as conn:
                    counted_failures = conn.execute(count).scalar_one_or_none()
                if counted_failures is None:
                    self._check_state(self.get(link_id), now)
                    raise LinkGone("this link was just closed: ask the sender for a new one")
                raise WrongPin(max(self.pin_attempts - int(counted_failures), 0))
            counted = {"pin_failures": 0}
        use = (
            update(share_links)
            .where(
                *live,
                or_(share_links.c.max_uses.is_(None), share_links.c.uses < share_links.c.max_uses),
            )
            .values(uses=share_links.c.uses + 1, last_used_at=now, **counted)
            .returning(*share_links.c)
        )
        with self.engine.begin() as conn:
            opened = conn.execute(use).first()
        if opened is None:
            self._check_state(self.get(link_id), now)
            raise LinkGone("this link was just used up: ask the sender for a new one")
        return _row_to_link(opened)

    @staticmethod
    def _check_state(link: ShareLink, now: float) -> None:
        state = link.state(now)
        if state == "locked":
            raise LinkLocked(
                "this link is locked after too many wrong PINs: ask the sender for a new link"
            )
        if state != "active":
            raise LinkGone(f"this link is {state.replace('-', ' ')}: ask the sender for a new one")
