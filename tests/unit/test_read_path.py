"""The gateway's WADO-RS read path: ordered bounded read-ahead, the content caches,
verified instance reads and metadata templated per request (dicomweb.wado.prefetch,
dicomweb.wado.instance_reader, dicomweb.wado.metacache); its catalog queries on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest

from archive.blobstore import BlobStore
from archive.catalog import Catalog, InstanceRecord, SourceRecord
from archive.split import pixel_data_offset
from dicomweb.wado.instance_reader import ContentCache, InstanceReader
from dicomweb.wado.metacache import metadata_body, metadata_template, render
from dicomweb.wado.metadata import instance_metadata
from dicomweb.wado.prefetch import batches, ordered_prefetch
from query.api import StoredInstance, instances_to_retrieve
from security.errors import IntegrityError
from sharing.api import Grants


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """The blob store's catalog (tests/unit/conftest.py) on SQLite and on PostgreSQL."""
    cat = Catalog(catalog_url, durable=False)
    try:
        yield cat
    finally:
        cat.close()


# -- batches -------------------------------------------------------------------------------


def test_batches_cover_every_index_once_in_order() -> None:
    weights = [5, 5, 5, 20, 1, 1, 1, 1]
    runs = batches(weights, 10)
    assert [list(r) for r in runs] == [[0, 1], [2, 3], [4, 5, 6, 7]]
    assert [i for r in runs for i in r] == list(range(len(weights)))
    assert batches([], 10) == []
    assert [list(r) for r in batches([100], 10)] == [[0]]


# -- ordered_prefetch ----------------------------------------------------------------------


async def _collect(gen: AsyncGenerator[int, None]) -> list[int]:
    return [item async for item in gen]


def test_prefetch_keeps_order_whatever_finishes_first() -> None:
    rng = random.Random(7)
    delays = [rng.uniform(0, 0.01) for _ in range(40)]

    def work(key: int) -> int:
        time.sleep(delays[key])
        return key * 10

    with ThreadPoolExecutor(4) as pool:
        out = asyncio.run(
            _collect(ordered_prefetch(pool, work, list(range(40)), [1] * 40, max_ahead=8))
        )
    assert out == [k * 10 for k in range(40)]


def test_prefetch_never_reads_more_than_max_ahead_beyond_the_consumer() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(key: int) -> int:
        with lock:
            started.append(key)
        return key

    async def consume() -> list[int]:
        seen = []
        async for key in ordered_prefetch(pool, work, list(range(30)), [2] * 30, max_ahead=6):
            # in flight at most 6 units of weight = 3 keys past the one handed out
            assert len(started) <= key + 1 + 3
            await asyncio.sleep(0.002)  # a slow socket
            seen.append(key)
        return seen

    with ThreadPoolExecutor(4) as pool:
        assert asyncio.run(consume()) == list(range(30))
    assert sorted(started) == list(range(30))


def test_prefetch_always_has_one_in_flight_even_if_heavier_than_the_bound() -> None:
    with ThreadPoolExecutor(2) as pool:
        out = asyncio.run(
            _collect(ordered_prefetch(pool, lambda k: k, [1, 2, 3], [100, 100, 100], 10))
        )
    assert out == [1, 2, 3]


def test_prefetch_stops_reading_when_the_consumer_leaves() -> None:
    started: list[int] = []
    gate = threading.Event()

    def work(key: int) -> int:
        started.append(key)
        if key > 0:
            gate.wait(5)
        return key

    async def first_only() -> int:
        gen = ordered_prefetch(pool, work, list(range(50)), [1] * 50, max_ahead=3)
        try:
            async for key in gen:
                return key
        finally:
            await gen.aclose()
            gate.set()
        raise AssertionError("nothing yielded")

    with ThreadPoolExecutor(1) as pool:
        assert asyncio.run(first_only()) == 0
    assert len(started) <= 1 + 3  # the rest was never submitted or was cancelled


def test_prefetch_raises_in_order_after_the_good_results() -> None:
    def work(key: int) -> int:
        if key == 3:
            raise IntegrityError("blob 3 does not match its name")
        return key

    got: list[int] = []

    async def consume() -> None:
        async for key in ordered_prefetch(pool, work, list(range(6)), [1] * 6, max_ahead=4):
            got.append(key)

    with ThreadPoolExecutor(3) as pool, pytest.raises(IntegrityError):
        asyncio.run(consume())
    assert got == [0, 1, 2]


# -- ContentCache --------------------------------------------------------------------------


def test_cache_evicts_least_recently_used_within_its_bound() -> None:
    cache = ContentCache(800)
    for name in (b"a", b"b", b"c", b"d"):
        cache.put(name, name * 100)
    assert cache.get(b"a") == b"a" * 100  # a is now the most recent
    cache.put(b"e", b"e" * 100)
    cache.put(b"f", b"f" * 100)
    cache.put(b"g", b"g" * 100)
    cache.put(b"h", b"h" * 100)
    cache.put(b"i", b"i" * 100)  # over 800 bytes: the least recent (b) goes
    assert cache.get(b"b") is None
    assert cache.get(b"c") == b"c" * 100  # c is now the most recent, d the least
    cache.put(b"j", b"j" * 100)
    assert cache.get(b"d") is None
    assert cache.get(b"a") == b"a" * 100
    assert cache.size <= 800


def test_cache_keeps_nothing_too_big_or_when_off() -> None:
    cache = ContentCache(800)
    cache.put(b"big", b"x" * 101)  # over an eighth of the bound
    assert cache.get(b"big") is None
    off = ContentCache(0)
    off.put(b"a", b"a")
    assert off.get(b"a") is None
    assert off.size == 0


# -- InstanceReader ------------------------------------------------------------------------


def _reader(store: BlobStore, cache_bytes: int) -> InstanceReader:
    return InstanceReader(store, ContentCache(cache_bytes), threads=2)


def test_reader_returns_the_stored_bytes_in_parts(store: BlobStore, big_ct: bytes) -> None:
    store.put("i1", 1, big_ct)
    reader = _reader(store, 8 << 20)
    try:
        [planned] = reader.plan(["i1"])
        assert planned.size == len(big_ct)
        parts = reader.read(planned)
        assert len(parts) > 1  # header, pixels, ...: written one after the other
        assert b"".join(parts) == big_ct
        assert b"".join(reader.read(planned)) == big_ct
        assert reader.cache.hits == len(parts)  # the second read came from the cache
    finally:
        reader.close()


def test_reader_plans_unknown_attachments_without_parts(store: BlobStore) -> None:
    reader = _reader(store, 0)
    try:
        [planned] = reader.plan(["missing"])
        assert planned.parts is None and planned.size is None
    finally:
        reader.close()


def _tamper_pixels(store: BlobStore, uuid: str) -> None:
    pixels = max(store.parts(uuid), key=lambda p: p.end - p.start)
    assert pixels.blob is not None
    path = store.hot.path(pixels.blob.id.hex())
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))


def test_reader_verifies_every_read_from_the_tier(store: BlobStore, big_ct: bytes) -> None:
    store.put("i1", 1, big_ct)
    _tamper_pixels(store, "i1")
    reader = _reader(store, 8 << 20)
    try:
        [planned] = reader.plan(["i1"])
        for _ in range(2):  # a failed read leaves nothing in the cache to be served later
            with pytest.raises(IntegrityError):
                reader.read(planned)
        assert reader.cache.hits == 1  # only the (intact) header part was ever cached
    finally:
        reader.close()


# -- metadata templated per request ------------------------------------------------------


def _item(uuid: str, study: str, series: str, sop: str) -> StoredInstance:
    return StoredInstance(study, series, sop, "1.2.840.10008.1.2.1", uuid)


def test_metadata_template_renders_the_same_document_as_direct_conversion(
    big_ct: bytes,
) -> None:
    url = "https://pacs.example/dicom-web/studies/1/series/2/instances/3"
    header = big_ct[: pixel_data_offset(big_ct)]
    assert json.loads(render(metadata_template(header), url)) == instance_metadata(header, url)


def test_two_instances_sharing_a_header_blob_get_their_own_urls(
    store: BlobStore, big_ct: bytes
) -> None:
    store.put("a", 1, big_ct)
    store.put("b", 1, big_ct)  # the same bytes: the same header blob
    assert store.parts("a")[0].blob == store.parts("b")[0].blob
    cache = ContentCache(1 << 20)
    items = [_item("a", "1.1", "1.1.1", "1.1.1.1"), _item("b", "2.2", "2.2.2", "2.2.2.2")]
    first = json.loads(metadata_body(store, cache, items, "http://one:8080/dicom-web"))
    assert cache.misses == 1 and cache.hits == 1  # converted once, then reused
    second = json.loads(metadata_body(store, cache, items, "https://two.example/dicom-web"))
    assert cache.hits == 3
    for base, documents in (
        ("http://one:8080/dicom-web", first),
        ("https://two.example/dicom-web", second),
    ):
        for item, document in zip(items, documents, strict=True):
            url = (
                f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"
            )
            assert document["7FE00010"]["BulkDataURI"] == f"{url}/bulkdata/7FE00010"
            assert document == instance_metadata(store.get_header(item.attachment_uuid), url)


def test_metadata_of_a_value_like_the_placeholder_is_left_alone(store: BlobStore) -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2"
    ds.SeriesInstanceUID = "1.2.9"
    ds.StudyDescription = "\x00abc\x00 and u0000"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    store.put("sc", 1, buffer.getvalue())
    body = metadata_body(
        store, ContentCache(1 << 20), [_item("sc", "1.2", "1.2.9", "1.2.3")], "http://h/dw"
    )
    [document] = json.loads(body)
    assert document == instance_metadata(
        store.get_header("sc"), "http://h/dw/studies/1.2/series/1.2.9/instances/1.2.3"
    )
    assert document["00081030"]["Value"] == ["\x00abc\x00 and u0000"]


# -- batched catalog lookups ---------------------------------------------------------------


def test_batched_part_lookups_match_the_one_by_one_ones(
    store: BlobStore, small_ct: list[bytes], big_ct: bytes
) -> None:
    for index, data in enumerate([*small_ct, big_ct]):
        store.put(f"u{index}", 1, data)
    uuids = [f"u{index}" for index in range(len(small_ct) + 1)] + ["nope"]
    many = store.catalog.attachment_parts_many(uuids)
    assert set(many) == set(uuids) - {"nope"}
    for uuid, parts in many.items():
        assert parts == store.catalog.attachment_parts(uuid)[2]
    stored = store.stored_parts(uuids)
    assert {u: [(p.start, p.end, p.blob) for p in ps] for u, ps in stored.items()} == {
        u: [(p.start, p.end, p.blob) for p in store.parts(u)] for u in many
    }
    headers = store.header_ids(uuids)
    assert headers == {u: parts[0][0].id for u, parts in many.items()}


def test_in_lists_cut_long_lists() -> None:
    from archive.catalog.database import _in_lists

    cut = list(_in_lists([str(n) for n in range(7)], size=3))
    assert [names for names, _ in cut] == [":v0, :v1, :v2", ":v0, :v1, :v2", ":v0"]
    assert [v for _, params in cut for v in params.values()] == [str(n) for n in range(7)]


# -- the WADO-RS look-up, built once per institution ---------------------------------------


def test_cached_lookup_judges_grants_when_it_runs(catalog_url: str) -> None:
    owner, reader = "Hospital A", "Reading Centre"
    catalog = Catalog(catalog_url, durable=False)
    try:
        ids = {name: catalog.add_institution(name).id for name in (owner, reader)}
        record = InstanceRecord(
            sop_uid="1.2.3.1",
            series_uid="1.2.9",
            study_uid="1.2",
            patient_id="P1",
            issuer=owner,
            modality="CT",
            attachment_uuid="att-1",
        )
        catalog.index_batch([record], [SourceRecord("1.2.3.1", ids[owner], "dimse", "A")])
        now = time.time()
        grant = Grants(catalog.engine).add(
            grantor=owner, grantee=reader, study_uid="1.2", created_by="a", expires_at=now + 60
        )
        assert [i.sop_uid for i in instances_to_retrieve(catalog, reader, "1.2", now=now)] == [
            "1.2.3.1"
        ]
        assert instances_to_retrieve(catalog, reader, "1.2", now=now + 61) == []  # expired
        assert instances_to_retrieve(catalog, reader, "1.2", "1.2.9", "1.2.3.1", now=now)
        assert instances_to_retrieve(catalog, reader, "1.2", "1.2.8", now=now) == []
        assert instances_to_retrieve(catalog, owner, "1.2", now=now + 61)  # owners always
        Grants(catalog.engine).revoke(grant.id, by="a")
        assert instances_to_retrieve(catalog, reader, "1.2", now=now) == []  # revoked
    finally:
        catalog.close()
