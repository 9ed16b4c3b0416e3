"""The tiering package's public face: the payload store protocol every tier backend
follows, a staged write, and the local-directory backend with its write journal."""

from tiering.base import ObjectStore, Staged
from tiering.fs import FileStore, Journal

__all__ = ["FileStore", "Journal", "ObjectStore", "Staged"]
