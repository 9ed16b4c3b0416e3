"""Attempts counted by a compare-and-set in SQL: parallel wrong passwords and PINs get no
more checks than the limit, no writer fails on a busy database, and parallel visitors of a
valid link all get in. Real threads on the catalog's own engine, on SQLite (WAL, busy
timeout) and on PostgreSQL."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import pytest
from sqlalchemy import Engine

from archive.catalog import Catalog
from security.authorization import AuthorizationStore, Grant
from security.errors import VnaError
from security.users import LoginOutcome, UserRegistry
from sharing.api import LinkGone, LinkLocked, ShareLinks, WrongPin
from tests.unit.support import REDIRECT, code_for

PASSWORD = "correct horse battery"
STUDY = "1.2.826.0.1.3680043.8.498.7"
DAY = 86400.0
T = TypeVar("T")


def in_parallel(calls: list[Callable[[], T]]) -> list[T | Exception]:
    """Run every call at once on its own thread; results (or the exception raised)."""

    def run(call: Callable[[], T]) -> T | Exception:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the test looks at what was raised
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def check_parallel_wrong_passwords(engine: Engine) -> None:
    users = UserRegistry(engine, max_failures=5, lockout_seconds=900)
    users.add("alice", "Hospital A", PASSWORD, "dicom.read")
    now = 1_000_000.0
    results = in_parallel(
        [lambda: users.authenticate("alice", "wrong password!", now=now) for _ in range(12)]
    )
    outcomes = Counter(r.outcome if not isinstance(r, Exception) else r for r in results)
    # four wrong passwords answered as such, the fifth locked the account, the rest were
    # refused without a check
    assert outcomes == {LoginOutcome.BAD_CREDENTIALS: 4, LoginOutcome.LOCKED: 8}, outcomes
    assert users.authenticate("alice", PASSWORD, now=now + 1).outcome is LoginOutcome.LOCKED
    assert users.authenticate("alice", PASSWORD, now=now + 901).ok


def check_parallel_guesses_with_the_right_password(engine: Engine) -> None:
    """The right password among parallel guesses gets in only if it was one of the
    admitted attempts: at most ``max_failures`` passwords are ever checked."""
    users = UserRegistry(engine, max_failures=5, lockout_seconds=900)
    users.add("bob", "Hospital A", PASSWORD, "dicom.read")
    now = 2_000_000.0
    guesses = ["wrong password!"] * 11 + [PASSWORD]
    results = in_parallel([lambda g=g: users.authenticate("bob", g, now=now) for g in guesses])
    assert not [r for r in results if isinstance(r, Exception)]
    outcomes = Counter(r.outcome for r in results if not isinstance(r, Exception))
    assert outcomes[LoginOutcome.BAD_CREDENTIALS] <= 4
    assert outcomes[LoginOutcome.OK] + outcomes[LoginOutcome.BAD_CREDENTIALS] <= 5
    assert sum(outcomes.values()) == 12


def check_parallel_wrong_pins(engine: Engine) -> None:
    links = ShareLinks(engine, pin_attempts=5)
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY, pin="2468")
    results = in_parallel([lambda: links.open(new.link.id, new.secret, "1357") for _ in range(20)])
    wrong = [r for r in results if isinstance(r, WrongPin)]
    locked = [r for r in results if isinstance(r, LinkLocked)]
    others = [r for r in results if type(r) not in (WrongPin, LinkLocked)]
    assert len(wrong) + len(locked) == 20, others
    assert sorted(w.attempts_left for w in wrong) == [0, 1, 2, 3, 4]  # each attempt counted
    link = links.get(new.link.id)
    assert link.locked and link.pin_failures == 5 and link.uses == 0
    with pytest.raises(LinkLocked):
        links.open(new.link.id, new.secret, "2468")  # locked: the right PIN is not checked


def check_parallel_visitors_all_get_in(engine: Engine) -> None:
    links = ShareLinks(engine, pin_attempts=5)
    plain = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY)
    results = in_parallel([lambda: links.open(plain.link.id, plain.secret, None)] * 10)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert links.get(plain.link.id).uses == 10
    pinned = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY, pin="2468")
    results = in_parallel([lambda: links.open(pinned.link.id, pinned.secret, "2468")] * 10)
    assert not [r for r in results if isinstance(r, Exception)], results
    after = links.get(pinned.link.id)
    assert after.uses == 10 and after.pin_failures == 0 and not after.locked


def check_parallel_opens_respect_the_use_limit(engine: Engine) -> None:
    links = ShareLinks(engine)
    new = links.create(STUDY, "Hospital A", "dr-a", expires_in=DAY, max_uses=3)
    results = in_parallel([lambda: links.open(new.link.id, new.secret, None)] * 10)
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"ShareLink": 3, "LinkGone": 7}, results
    assert all(not isinstance(r, VnaError) or isinstance(r, LinkGone) for r in results)
    assert links.get(new.link.id).uses == 3


def check_parallel_refresh_and_code_reuse(engine: Engine) -> None:
    """Transactions that read before they write (a refresh token spent, a code redeemed)
    wait for the write lock: one wins, the others are refused as reuse, none fails."""
    store = AuthorizationStore(engine, code_lifetime=60)
    verifier = secrets.token_urlsafe(48)
    code = code_for(store, verifier)
    results = in_parallel(
        [
            lambda: store.redeem_code(
                code, client_id="viewer", redirect_uri=REDIRECT, code_verifier=verifier
            )
        ]
        * 8
    )
    assert Counter(type(r).__name__ for r in results) == {"Grant": 1, "InvalidGrantError": 7}
    grant = next(r for r in results if isinstance(r, Grant))
    refresh = store.issue_refresh(replace(grant, auth_time=int(time.time())))
    results = in_parallel([lambda: store.spend_refresh(refresh, client_id="viewer")] * 8)
    assert Counter(type(r).__name__ for r in results) == {"Grant": 1, "InvalidGrantError": 7}


CHECKS = [
    check_parallel_wrong_passwords,
    check_parallel_guesses_with_the_right_password,
    check_parallel_wrong_pins,
    check_parallel_visitors_all_get_in,
    check_parallel_opens_respect_the_use_limit,
    check_parallel_refresh_and_code_reuse,
]


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    # the catalog's own engine (on SQLite: WAL, busy timeout), as the gateway uses it
    catalog = Catalog(catalog_url, durable=False)
    yield catalog.engine
    catalog.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_attempts(engine: Engine, check: Callable[[Engine], None]) -> None:
    check(engine)
