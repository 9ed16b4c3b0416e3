"""Share links: secret only as a hash, PIN lock-out, use limit, expiry, revocation, and the
SQL condition that narrows a link's tokens to its one study."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, select

from security.errors import Conflict, InvalidInput, NotFound
from sharing.links import (
    Action,
    LinkGone,
    LinkLocked,
    PinRequired,
    ShareLinks,
    WrongPin,
    link_reaches,
    share_institution,
    share_links,
)
from tests.catalogdb import migrated

STUDY = "1.2.826.0.1.3680043.8.498.1"
DAY = 86400.0


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return create_engine(migrated(f"sqlite:///{tmp_path / 'links.db'}"))


@pytest.fixture
def links(engine: Engine) -> ShareLinks:
    return ShareLinks(engine, pin_attempts=3)


def test_the_secret_is_256_bits_and_stored_only_as_its_hash(links: ShareLinks) -> None:
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY)
    assert len(new.secret) >= 43  # 32 bytes, base64url
    url = new.url("https://vna.example/")
    assert url == f"https://vna.example/share/{new.link.id}#{new.secret}"
    with links.engine.connect() as conn:
        row = conn.execute(select(share_links)).one()
    assert new.secret.encode() not in b"".join(
        v if isinstance(v, bytes) else str(v).encode() for v in row
    )
    assert bytes(row.secret_sha256) == hashlib.sha256(new.secret.encode()).digest()


def test_a_link_id_never_starts_with_a_dash(
    links: ShareLinks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vna share revoke ID` would take an id starting with "-" for an option."""
    drawn = iter(["-WJ2u5q1IQvgun_G", "WJ2u5q1IQvgun_G-"])
    real = secrets.token_urlsafe
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(drawn) if n == 12 else real(n))
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY)
    assert new.link.id == "WJ2u5q1IQvgun_G-"


def test_open_counts_uses_until_the_limit(links: ShareLinks) -> None:
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY, max_uses=2)
    assert links.open(new.link.id, new.secret, None).uses == 1
    opened = links.open(new.link.id, new.secret, None)
    assert opened.uses == 2 and opened.last_used_at is not None
    with pytest.raises(LinkGone, match="used up"):
        links.open(new.link.id, new.secret, None)


def test_wrong_secret_answers_like_an_unknown_id(links: ShareLinks) -> None:
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY)
    with pytest.raises(NotFound) as wrong:
        links.open(new.link.id, new.secret[:-1] + "x", None)
    with pytest.raises(NotFound) as unknown:
        links.open("no-such-link", new.secret, None)
    assert str(wrong.value) == str(unknown.value)
    assert links.get(new.link.id).uses == 0


def test_pin_is_asked_checked_and_locks_after_the_attempts(links: ShareLinks) -> None:
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY, pin="4711")
    assert new.link.has_pin
    with pytest.raises(PinRequired):
        links.open(new.link.id, new.secret, None)
    with pytest.raises(WrongPin) as first:
        links.open(new.link.id, new.secret, "0000")
    assert first.value.attempts_left == 2
    assert links.open(new.link.id, new.secret, "4711").uses == 1  # success resets the count
    for left in (2, 1, 0):
        with pytest.raises(WrongPin) as wrong:
            links.open(new.link.id, new.secret, "1234")
        assert wrong.value.attempts_left == left
    with pytest.raises(LinkLocked):
        links.open(new.link.id, new.secret, "4711")  # even the right PIN, once locked
    assert links.get(new.link.id).state() == "locked"


def test_expiry_and_revocation(links: ShareLinks) -> None:
    old = links.create(STUDY, "Hospital A", "dr-a", expires_in=10, now=1000.0)
    with pytest.raises(LinkGone, match="expired"):
        links.open(old.link.id, old.secret, None, now=1011.0)
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY)
    with pytest.raises(NotFound):
        links.revoke(new.link.id, "dr-b", institution="Hospital B")  # not theirs
    revoked = links.revoke(new.link.id, "dr-a", institution="Hospital A")
    assert revoked.state() == "revoked"
    with pytest.raises(Conflict):
        links.revoke(new.link.id, "dr-a")
    with pytest.raises(LinkGone, match="revoked"):
        links.open(new.link.id, new.secret, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expires_in": 0}, "expiry"),
        ({"expires_in": DAY, "max_uses": 0}, "max-uses"),
        ({"expires_in": DAY, "pin": "12"}, "PIN"),
    ],
)
def test_bad_links_are_refused(links: ShareLinks, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        links.create(STUDY, "Hospital A", "dr-a", **kwargs)  # type: ignore[arg-type]


def test_actions_always_include_view(links: ShareLinks) -> None:
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY, actions=["download"])
    assert new.link.actions == {Action.VIEW, Action.DOWNLOAD}
    assert links.list("Hospital A") == [new.link] and links.list("Hospital B") == []


def test_tokens_of_a_link_reach_its_study_only_while_active(
    links: ShareLinks, engine: Engine
) -> None:
    outer = Table("s", MetaData(), Column("study_uid", String))
    outer.create(engine)
    with engine.begin() as conn:
        conn.execute(outer.insert(), [{"study_uid": STUDY}, {"study_uid": "1.2.3.4"}])

    def visible(institution: str) -> list[str]:
        stmt = select(outer.c.study_uid).where(link_reaches(outer.c.study_uid, institution))
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]

    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY)
    assert visible(share_institution(new.link.id)) == [STUDY]
    assert visible(share_institution("another-link")) == []
    links.revoke(new.link.id, "dr-a")
    assert visible(share_institution(new.link.id)) == []
