"""Comparing the gateway's DICOMweb answers with an Orthanc DICOMweb plugin's.

Shared by the QIDO comparison against the archive's own Orthanc
(``test_qido_vs_orthanc.py``) and the conformance comparison against a stock Orthanc
peer (``test_conformance_orthanc.py``).

How Orthanc is asked: Orthanc 1.10.1 hands its plugins the query string without
percent-decoding it (``PatientID=QP00%31`` reaches the DICOMweb plugin verbatim and matches
nothing) and its HTTP server drops ``\\`` from it, so queries to Orthanc go out raw (``*``,
``?``, ``^`` unencoded, :func:`raw_get`). The gateway gets them percent-encoded, as
dicomweb-client, OHIF and ``requests`` send them.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import HTTP
from typing import Any

import requests

RETRIEVE_URL = "00081190"
UID_TAG = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Answer:
    """A buffered HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body)


def raw_get(
    port: int,
    path: str,
    params: Params = (),
    *,
    auth: tuple[str, str],
    accept: str | None = "application/dicom+json",
) -> Answer:
    """GET ``path`` from an Orthanc on loopback with the query string unencoded (see the
    module docstring) and basic auth; no gzip, so the body is as Orthanc wrote it."""
    query = "&".join(f"{k}={v}" for k, v in params)
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}"}
    if accept is not None:
        headers["Accept"] = accept
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path + (f"?{query}" if query else ""), headers=headers)
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    return Answer(answer.status, {k.lower(): v for k, v in answer.getheaders()}, body)


def orthanc_version(url: str, auth: tuple[str, str]) -> tuple[int, ...]:
    """Orthanc's (major, minor) from ``GET /system``."""
    version = requests.get(f"{url}/system", auth=auth, timeout=30).json()["Version"]
    return tuple(int(part) for part in str(version).split(".")[:2])


def params(text: str) -> Params:
    """``"a=1&b=2"`` -> ``(("a", "1"), ("b", "2"))``, nothing decoded."""
    pairs = (item.partition("=") for item in text.split("&") if item)
    return tuple((key, value) for key, _, value in pairs)


def uid_tag(path: str) -> str:
    """The UID tag of the level a search path asks for."""
    return UID_TAG[path.rstrip("/").rsplit("/", 1)[-1]]


def by_uid(results: list[Any], tag: str) -> dict[str, dict[str, Any]]:
    found = {str(r[tag]["Value"][0]): r for r in results}
    assert len(found) == len(results), "a UID was returned twice"
    return found


def _number(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        return float(value)
    return float(value) if isinstance(value, int | float) else value


def normalised(tag: str, element: dict[str, Any]) -> dict[str, Any]:
    """What PS3.18 leaves open, made equal: the order of ModalitiesInStudy's values, the
    host of a Retrieve URL, DS/IS values as numbers, and empty person-name groups (Orthanc
    writes ``"Phonetic": ""``, the gateway leaves it out)."""
    if element.get("vr") == "PN" and "Value" in element:
        groups = [{k: v for k, v in g.items() if v} for g in element["Value"]]
        return {"vr": "PN", "Value": groups}
    if element.get("vr") in ("DS", "IS") and "Value" in element:
        # PS3.18 F.2.3.1: numbers; Orthanc 1.12 writes the file's strings ("0.000000")
        return {"vr": element["vr"], "Value": [_number(v) for v in element["Value"]]}
    if tag == "00080061" and "Value" in element:
        return {"vr": element["vr"], "Value": sorted(element["Value"])}
    if tag == RETRIEVE_URL:  # hosts differ; the resource path must not
        return {"vr": "UR", "Value": [v.split("/dicom-web", 1)[1] for v in element["Value"]]}
    return element


def compare(
    path: str,
    ours: list[Any],
    theirs: list[Any],
    *,
    theirs_only: Iterable[str] = (),
    ours_only: Iterable[str] | None = None,
    skip: Callable[[str, dict[str, Any], dict[str, Any]], bool] | None = None,
) -> set[str]:
    """Assert equal UID sets and equal values of every attribute both return; returns the
    UIDs.

    ``theirs_only``: tags Orthanc may return and the gateway not; ``ours_only`` (None:
    anything) the reverse, besides empty elements (an empty attribute and an absent one
    say the same); ``skip(tag, ours, theirs)`` leaves a pair of values uncompared (a
    listed difference, checked by a test of its own).
    """
    tag = uid_tag(path)
    mine, other = by_uid(ours, tag), by_uid(theirs, tag)
    assert set(mine) == set(other), (
        f"only ours: {sorted(set(mine) - set(other))}, only Orthanc: "
        f"{sorted(set(other) - set(mine))}"
    )
    allowed = set(theirs_only)
    for uid, a in mine.items():
        b = other[uid]
        for key in sorted(a.keys() & b.keys()):
            if skip is not None and skip(key, a[key], b[key]):
                continue
            assert normalised(key, a[key]) == normalised(key, b[key]), (uid, key)
        assert b.keys() - a.keys() <= allowed, (uid, sorted(b.keys() - a.keys() - allowed))
        if ours_only is not None:
            extra = {k for k in a.keys() - b.keys() - set(ours_only) if "Value" in a[k]}
            assert not extra, (uid, sorted(extra))
    return set(mine)


def check_paging(
    both: Callable[[str, Params], tuple[list[Any], list[Any]]], path: str, size: int
) -> None:
    """limit/offset: result order is the server's choice (PS3.18 8.3.4.4), so the pages
    differ in content; on each side they must be disjoint, of the same sizes, and together
    exactly the unpaged result; a page past the end is empty, not an error."""
    tag = uid_tag(path)
    everything, _ = both(path, ())
    total = len(everything)
    pages: dict[str, list[set[str]]] = {"ours": [], "orthanc": []}
    for offset in range(0, total + size, size):
        ours, theirs = both(path, params(f"limit={size}&offset={offset}"))
        pages["ours"].append(set(by_uid(ours, tag)))
        pages["orthanc"].append(set(by_uid(theirs, tag)))
    for side, got in pages.items():
        flat = [uid for page in got for uid in page]
        assert len(flat) == len(set(flat)) == total, side
        assert set(flat) == set(by_uid(everything, tag)), side
    assert [len(p) for p in pages["ours"]] == [len(p) for p in pages["orthanc"]]
    assert pages["ours"][-1] == set()


def multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers with lower-case names, payload), in order."""
    message = message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=HTTP
    )
    return [
        ({k.lower(): str(v) for k, v in part.items()}, part.get_payload(decode=True))
        for part in message.iter_parts()
    ]


def media_params(value: str) -> tuple[str, dict[str, str]]:
    """``'a/b; type="c"; x=y'`` -> ``("a/b", {"type": "c", "x": "y"})``."""
    media, *rest = (p.strip() for p in value.split(";"))
    found = {}
    for item in rest:
        name, _, text = item.partition("=")
        found[name.strip().lower()] = text.strip().strip('"')
    return media.lower(), found
