"""The read path: where a blob is, opening and checking it, attachments and their parts."""

from __future__ import annotations

import hmac
import logging

import zstandard

from archive.blobstore.base import FLAG_ZSTD, INLINE, AttachmentPart, attachment_digest
from archive.blobstore.journal import Journaling
from archive.catalog import BlobRecord
from archive.split import pixel_data_offset, split_dicom
from security.api import IntegrityError, NotFound, open_sealed

__all__ = [
    "Reader",
]

logger = logging.getLogger(__name__)


class Reader(Journaling):
    """Attachments out, exactly the bytes that went in, checked on every read."""

    def _decompress(self, body: bytes, size: int) -> bytes:
        """One zstd frame, or several in a row (a part compressed on two cores)."""
        decompressor = self._decompressor()
        if zstandard.frame_content_size(body) == size:
            return decompressor.decompress(body, max_output_size=size)
        return decompressor.decompressobj(read_across_frames=True).decompress(body)

    def _payload(self, record: BlobRecord) -> bytes:
        """A blob's sealed payload from where it is: its catalog row (inline) or its tier.

        The one place the read path asks where a blob is; more tiers answer here.
        """
        if record.tier == INLINE:
            if record.payload is None:
                raise IntegrityError(f"inline blob {record.id.hex()} has no payload")
            return record.payload
        return self.hot.get(record.id.hex())

    def _open(self, record: BlobRecord) -> tuple[int, bytes]:
        """Fetch a blob's payload (:meth:`_payload`) and decrypt it: ``(flags, body)``."""
        return open_sealed(
            self._payload(record), record.id, record.wrapped_key, self.keys.kek(record.kek_id)
        )

    def read_blob(self, record: BlobRecord) -> bytes:
        """Decrypt, decompress and verify one blob; IntegrityError on any mismatch.

        Two checks, and neither is redundant with the other:

        * the AES-GCM tag (the blob id and flags as associated data, under a data key that
          only unwraps with a KEK) proves the payload is what a holder of the KEK sealed
          for this id: a flipped, truncated or swapped payload fails here;
        * the keyed hash of the plaintext (BLAKE3; BLAKE2b in older homes), compared with
          the id, proves that what was sealed is the content the id names. GCM cannot: it
          authenticates whatever bytes the writer encrypted. The MAC catches a write path
          that sealed the wrong bytes (a buffer changed between hashing and compressing,
          a compressor or decompressor fault) and a forger who has a KEK but not the
          dedup key. Every attachment that shares the blob would inherit such a fault,
          so the check that makes dedup safe stays on every read from a tier (with
          BLAKE3 about a fifth of the read's CPU; it was 60 % with BLAKE2b).
        """
        flags, body = self._open(record)
        if flags & FLAG_ZSTD:
            try:
                body = self._decompress(body, record.size)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"blob {record.id.hex()} does not decompress") from exc
        if len(body) != record.size or not self.keys.namer.verify(body, record.id):
            raise IntegrityError(f"blob {record.id.hex()} does not match its name")
        return body

    def read_zstd(self, record: BlobRecord) -> bytes | None:
        """The stored zstd frame of a compressed blob, authenticated but not decompressed;
        None when the blob is stored uncompressed.

        For a client that decompresses itself (HTTP ``Content-Encoding: zstd``). The GCM
        tag is checked as on every read, so a flipped, truncated or swapped payload is
        still an IntegrityError; the keyed-hash check of :meth:`read_blob` needs the
        plaintext and is not made (the frame's own content checksum, when it has one,
        is checked by the client's decoder).
        """
        flags, body = self._open(record)
        return body if flags & FLAG_ZSTD else None

    def get(self, uuid: str) -> bytes:
        """Return exactly the bytes of attachment ``uuid`` (digested or still journaled)."""
        for _attempt in range(3):
            try:
                size, _digest, parts = self.catalog.attachment_parts(uuid)
            except NotFound:
                pending = self.catalog.pending(uuid)
                if pending is not None:
                    try:
                        return self._read_journal(pending)
                    except IntegrityError:
                        if self.catalog.pending(uuid) is not None:
                            raise
                continue  # digested between the two lookups: look again
            if len(parts) == 1:
                data = self.read_blob(parts[0][0])
            else:
                data = b"".join(self.read_blob(record) for record, _ in parts)
            if len(data) != size:
                raise IntegrityError(
                    f"attachment {uuid} reassembles to {len(data)} bytes, expected {size}"
                )
            return data
        raise NotFound(f"attachment {uuid} is not in the archive")

    def get_header(self, uuid: str) -> bytes:
        """The bytes of a DICOM attachment before Pixel Data, reading only that part.

        For metadata: a study of thousands of instances costs one small blob each.
        """
        try:
            _size, _digest, parts = self.catalog.attachment_parts(uuid)
        except NotFound:
            data = self.get(uuid)  # still journaled (write-behind): cut the whole file
            return data[: pixel_data_offset(data) or len(data)]
        record, _length = parts[0]
        return self.read_blob(record)

    def parts(self, uuid: str) -> list[AttachmentPart]:
        """The parts of attachment ``uuid`` in file order, without reading any blob.

        With :meth:`read_part` this reads one frame or one bulk value of a large file
        without reassembling (decrypting, decompressing) the whole of it.
        """
        try:
            _size, _digest, stored = self.catalog.attachment_parts(uuid)
        except NotFound:
            # still journaled (write-behind): cut the file as the digester will
            data = self.get(uuid)
            return [
                AttachmentPart(s.start, s.end, s.kind, data=data[s.start : s.end])
                for s in split_dicom(data, native_chunk=self.native_chunk)
            ]
        out = []
        offset = 0
        for record, length in stored:
            out.append(AttachmentPart(offset, offset + length, record.kind, blob=record))
            offset += length
        return out

    def stored_parts(self, uuids: list[str]) -> dict[str, list[AttachmentPart]]:
        """The parts of every digested attachment among ``uuids``, reading no blob.

        An attachment still journaled (write-behind), unknown or empty is left out, so a
        caller planning a large retrieval never pulls whole files into memory here.
        """
        out: dict[str, list[AttachmentPart]] = {}
        for uuid, stored in self.catalog.attachment_parts_many(uuids).items():
            offset = 0
            parts = out[uuid] = []
            for record, length in stored:
                parts.append(AttachmentPart(offset, offset + length, record.kind, blob=record))
                offset += length
        return out

    def header_ids(self, uuids: list[str]) -> dict[str, bytes]:
        """The blob id of each digested DICOM attachment's header part (what
        :meth:`get_header` reads), without reading any blob."""
        return self.catalog.first_blob_ids(uuids)

    def read_part(self, part: AttachmentPart) -> bytes:
        """The verified bytes of one part (IntegrityError on any mismatch)."""
        if part.data is not None:
            return part.data
        if part.blob is None:
            raise NotFound("this part has no stored blob")
        return self.read_blob(part.blob)

    def verify_attachment(self, uuid: str) -> None:
        """Read every part of an attachment and check the digest binding them in order."""
        size, digest, parts = self.catalog.attachment_parts(uuid)
        for record, _length in parts:
            self.read_blob(record)
        listed = [(record.id, length) for record, length in parts]
        if sum(length for _, length in listed) != size or not hmac.compare_digest(
            attachment_digest(self.keys.namer, listed), digest
        ):
            raise IntegrityError(f"attachment {uuid} does not match its digest")
