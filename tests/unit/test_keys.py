"""Key material on disk: dedup key, KEKs, rotation (security.keys)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from security.errors import NotFound
from security.keys import KeyRing, write_secret_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_the_keys(tmp_path: Path) -> None:
    directory = tmp_path / "home" / "keys"
    ring = KeyRing.open_or_create(directory)
    assert len(ring.dedup_key) == 32
    assert len(ring.key_ids()) == 1
    current_id, kek = ring.current()
    assert current_id == ring.current_id == ring.key_ids()[0]
    assert len(current_id) == 8
    int(current_id, 16)  # a hex id
    assert len(kek) == 32
    assert kek != ring.dedup_key
    assert (directory / "current").read_text().strip() == current_id
    assert (directory / f"kek-{current_id}.key").read_bytes() == kek


def test_files_are_0600_and_directory_0700(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = KeyRing.open_or_create(directory)
    ring.rotate()
    assert _mode(directory) == 0o700
    files = sorted(p for p in directory.iterdir())
    assert {p.name for p in files} >= {"dedup.key", "current"}
    assert len([p for p in files if p.name.startswith("kek-")]) == 2
    for path in files:
        assert _mode(path) == 0o600, path.name
    assert not [p for p in files if p.name.endswith(".tmp")], "temporary files left behind"


def test_an_existing_lax_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    KeyRing.open_or_create(directory)
    assert _mode(directory) == 0o700


def test_a_new_home_names_blobs_with_blake3(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    ring = KeyRing.open_or_create(directory)
    assert ring.namer.algorithm == "blake3"
    assert ring.namer.key == ring.dedup_key
    assert (directory / "mac-algorithm").read_text().strip() == "blake3"
    assert _mode(directory / "mac-algorithm") == 0o600


def test_a_home_keeps_the_algorithm_it_started_with(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    assert KeyRing.open_or_create(directory, "blake2b").namer.algorithm == "blake2b"
    # a later start configured otherwise must not rename (and so orphan) every blob
    assert KeyRing.open_or_create(directory, "blake3").namer.algorithm == "blake2b"


def test_a_home_from_before_the_algorithm_file_is_blake2b(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyRing.open_or_create(directory)
    (directory / "mac-algorithm").unlink()
    assert KeyRing(directory).namer.algorithm == "blake2b"
    assert KeyRing.open_or_create(directory).namer.algorithm == "blake2b"


def test_an_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    with pytest.raises(ValueError, match="unknown blob MAC"):
        KeyRing.open_or_create(directory, "md5")
    KeyRing.open_or_create(directory)
    (directory / "mac-algorithm").write_text("sha1\n")
    with pytest.raises(NotFound, match="sha1"):
        KeyRing(directory)


def test_open_or_create_is_idempotent(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    first = KeyRing.open_or_create(directory)
    second = KeyRing.open_or_create(directory)
    assert second.dedup_key == first.dedup_key
    assert second.current() == first.current()
    assert second.key_ids() == first.key_ids()
    assert len(list(directory.glob("kek-*.key"))) == 1


def test_separate_homes_get_separate_keys(tmp_path: Path) -> None:
    a = KeyRing.open_or_create(tmp_path / "a")
    b = KeyRing.open_or_create(tmp_path / "b")
    assert a.dedup_key != b.dedup_key
    assert a.current()[1] != b.current()[1]


def test_rotate_makes_a_new_current_and_keeps_the_old(tmp_path: Path) -> None:
    ring = KeyRing.open_or_create(tmp_path / "keys")
    old_id, old_kek = ring.current()
    new_id = ring.rotate()
    assert new_id != old_id
    assert ring.current_id == new_id
    current_id, new_kek = ring.current()
    assert current_id == new_id
    assert new_kek != old_kek
    assert ring.kek(old_id) == old_kek
    assert ring.kek(new_id) == new_kek
    assert ring.key_ids() == sorted([old_id, new_id])
    assert (tmp_path / "keys" / "current").read_text().strip() == new_id


def test_rotation_keeps_the_dedup_key(tmp_path: Path) -> None:
    ring = KeyRing.open_or_create(tmp_path / "keys")
    dedup = ring.dedup_key
    ring.rotate()
    assert ring.dedup_key == dedup


def test_another_instance_notices_a_rotation(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    writer = KeyRing.open_or_create(directory)
    # the first `current` was written well before the rotation (see the xfail below for
    # rotations within one file-system timestamp tick)
    past = time.time() - 60
    os.utime(directory / "current", (past, past))
    reader = KeyRing(directory)
    before = reader.current()
    assert before == writer.current()
    new_id = writer.rotate()
    current_id, kek = reader.current()
    assert current_id == new_id
    assert kek == writer.kek(new_id)
    assert reader.kek(before[0]) == before[1]


def test_rotation_within_one_timestamp_tick_is_noticed(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    writer = KeyRing.open_or_create(directory)
    reader = KeyRing(directory)
    before = (directory / "current").stat().st_mtime_ns
    new_id = writer.rotate()
    os.utime(directory / "current", ns=(before, before))  # what a coarse clock produces
    assert reader.current()[0] == new_id


def test_kek_reloads_once_for_a_key_added_elsewhere(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    writer = KeyRing.open_or_create(directory)
    reader = KeyRing(directory)
    new_id = writer.rotate()
    # no current() call on the reader first: kek() itself must find the new file
    assert reader.kek(new_id) == writer.kek(new_id)


def test_unknown_kek_is_not_found(tmp_path: Path) -> None:
    ring = KeyRing.open_or_create(tmp_path / "keys")
    with pytest.raises(NotFound, match="deadbeef"):
        ring.kek("deadbeef")


def test_missing_directory_says_how_to_create_keys(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        KeyRing(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "vna up" in message


def test_current_pointing_at_a_missing_kek_is_not_found(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyRing.open_or_create(directory)
    (directory / "current").write_text("00000000\n")
    with pytest.raises(NotFound, match="00000000"):
        KeyRing(directory)


def test_write_secret_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.key"
    write_secret_file(path, b"first")
    assert path.read_bytes() == b"first"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    with pytest.raises(FileExistsError):
        write_secret_file(path, b"second")
    assert path.read_bytes() == b"first"


def test_refused_secret_leaves_no_temporary_copy(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    write_secret_file(path, b"first")
    with pytest.raises(FileExistsError):
        write_secret_file(path, b"second")
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


class _RotatedWhileListing(type(Path())):  # type: ignore[misc]
    """A key directory in which another process rotates right after this one lists it."""

    rotated: list[str] = []

    def iterdir(self):  # type: ignore[no-untyped-def]
        entries = list(super().iterdir())
        if not self.rotated:
            self.rotated.append(KeyRing(Path(str(self))).rotate())
        return iter(entries)


def test_reload_survives_a_rotation_by_another_process(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    KeyRing.open_or_create(directory)
    _RotatedWhileListing.rotated = []
    ring = KeyRing(_RotatedWhileListing(directory))
    assert _RotatedWhileListing.rotated
    # the snapshot is consistent (the key `current` named when read is there) and the
    # next use notices the rotation
    assert ring.current()[0] == _RotatedWhileListing.rotated[0]
