"""Person names (VR PN) folded for case-insensitive matching in every script.

A PN value has up to three component groups separated by ``=``: alphabetic, ideographic
and phonetic (PS3.5 6.2.1), e.g. ``Yamada^Tarou=山田^太郎=やまだ^たろう``. The catalog keeps,
next to the name as stored, each group folded by :func:`fold` (:func:`folded_groups`), and
the query side folds what a user typed the same way. Matching then compares folded text
with ``=`` and ``LIKE`` only: the database's own ``lower()`` is never needed (SQLite's
folds ASCII only, PostgreSQL's depends on the cluster's locale).
"""

from __future__ import annotations

import unicodedata

__all__ = ["GROUPS", "fold", "fold_group", "folded_groups", "split_groups"]

GROUPS = 3
"""Alphabetic, ideographic, phonetic."""


def fold(text: str) -> str:
    """Unicode default caseless form, compatibility-normalised (NFKC of the casefold of the
    NFKC form): ``Äneas`` and ``ÄNEAS`` fold alike, as do ``ΔΙΟΝΥΣΙΟΣ`` and
    ``Διονυσιος``, full-width ``ＹＡＭＡＤＡ`` and ``yamada``, half-width and full-width kana."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def fold_group(group: str) -> str:
    """One component group folded, with the padding PS3.5 calls insignificant removed:
    spaces around components and trailing empty components (``Doe^Jane^^`` is ``Doe^Jane``)."""
    components = [c.strip() for c in fold(group).split("^")]
    while components and not components[-1]:
        components.pop()
    return "^".join(components)


def split_groups(value: str) -> list[str]:
    """The component groups of a PN value (at most three; a fourth ``=`` is not a group)."""
    return value.split("=", GROUPS - 1)[:GROUPS]


def folded_groups(value: str | None) -> tuple[str, str, str] | None:
    """The folded alphabetic, ideographic and phonetic groups of a stored PN value, ``""``
    for an absent group; None for an absent value. Multi-valued PN keeps its first value."""
    if value is None:
        return None
    groups = [fold_group(g) for g in split_groups(value.split("\\", 1)[0])]
    groups += [""] * (GROUPS - len(groups))
    return groups[0], groups[1], groups[2]
