"""Content-addressed artifact storage.

A blob is stored once under its sha256 and never changes. :class:`ArtifactStore` is the small
interface the rest of modelport uses; :class:`LocalArtifactStore` keeps blobs in a folder
(``ab/cdef...``), written to a temporary file and renamed into place so a crash never leaves a
half-written blob under a valid name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

_CHUNK = 1 << 20


class ArtifactStore(Protocol):
    """Where model artifacts and dataset snapshots live."""

    def put(self, stream: BinaryIO) -> tuple[str, int]:
        """Store the stream's bytes; return their sha256 and size."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def local_path(self, sha256: str) -> Path:
        """A local file holding the blob (downloaded first when the store is remote)."""
        ...


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LocalArtifactStore:
    """Blobs in a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:]

    def put(self, stream: BinaryIO) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self._path(sha)
            if final.exists():
                os.unlink(tmp)
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp, final)
            return sha, size
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def local_path(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.exists():
            raise FileNotFoundError(f"artifact {sha256} is not in {self.root}")
        return path


def open_artifact_store(location: str) -> LocalArtifactStore:
    """The artifact store for a location from the settings (a local folder for now)."""
    if "://" in location and not location.startswith("file://"):
        raise ValueError(
            f"artifact location {location!r}: only local folders are supported in this release"
        )
    return LocalArtifactStore(location.removeprefix("file://"))
