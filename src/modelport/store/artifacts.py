"""Content-addressed artifact storage.

A blob is stored once under its sha256 and never changes. :class:`ArtifactStore` is the small
interface the rest of modelport uses (model artifacts and dataset snapshots alike), with two
implementations, both laid out ``ab/cdef...`` under their root:

- :class:`LocalArtifactStore` keeps blobs in a folder, written to a temporary file and renamed
  into place so a crash never leaves a half-written blob under a valid name.
- :class:`RemoteArtifactStore` keeps them under any fsspec URL (``s3://bucket/prefix``,
  ``gs://...``, ``memory://...``), shared by every server of a deployment. Flavors load from a
  path, so :meth:`~RemoteArtifactStore.local_path` downloads a blob once into a local cache
  folder, checks its sha256 and renames it into place.

Writing to a remote store is safe against crashes and concurrent writers because the content
decides the name: on object stores (S3, GCS, Azure, memory) an object appears whole or not at
all, so the blob is uploaded straight to its final key; two servers pushing the same blob write
the same bytes. Elsewhere (SFTP, a mounted folder, ...) it is uploaded under a temporary key and
moved into place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from ..errors import ArtifactUnavailable

if TYPE_CHECKING:
    from ..settings import Settings

_CHUNK = 1 << 20
#: fsspec protocols whose writes become visible whole or not at all.
_ATOMIC_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})


class ArtifactStore(Protocol):
    """Where model artifacts and dataset snapshots live."""

    def put(self, stream: BinaryIO) -> tuple[str, int]:
        """Store the stream's bytes; return their sha256 and size."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def check(self) -> None:
        """Raise :class:`~modelport.errors.ArtifactUnavailable` when the store is out of reach."""
        ...

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


def _key(sha256: str) -> str:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:]}"


class LocalArtifactStore:
    """Blobs in a local folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        return self.root / _key(sha256)

    def incoming(self) -> Path:
        """A new empty temporary file in the store's folder, to be :meth:`adopt`-ed."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        os.close(fd)
        return Path(tmp)

    def adopt(self, tmp: Path, sha256: str) -> Path:
        """Rename a complete temporary file whose sha256 is known into its place."""
        final = self._path(sha256)
        if final.exists():
            tmp.unlink()
        else:
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
        return final

    def put(self, stream: BinaryIO) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        tmp = self.incoming()
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            self.adopt(tmp, sha)
            return sha, size
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def check(self) -> None:
        """Nothing to check: the folder was created when the store was opened."""

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def local_path(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.exists():
            raise ArtifactUnavailable(f"artifact {sha256} is missing from {self.root}")
        return path


class RemoteArtifactStore:
    """Blobs under an fsspec URL, read through a local cache folder."""

    def __init__(self, url: str, cache: str | os.PathLike[str], options: dict[str, Any]) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec is a core dependency
            raise ArtifactUnavailable("remote artifact stores need fsspec") from None
        self.url = url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url, **options)
        except ImportError as exc:
            raise ArtifactUnavailable(
                f"artifact location {url!r}: {exc} (each URL scheme needs its fsspec package; "
                "s3:// comes with the s3 extra: pip install 'modelport[s3]')"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ArtifactUnavailable(f"artifact location {url!r}: {exc}") from None
        self.root = root.rstrip("/")
        protocol = self.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        self.atomic = bool(protocols & _ATOMIC_PROTOCOLS)
        self.cache = LocalArtifactStore(cache)

    def check(self) -> None:
        """Fail now, with a clear error, when the store cannot be reached (a wrong endpoint,
        missing credentials), rather than at the first push or load."""
        try:
            self.fs.exists(self.root)
        except Exception as exc:
            raise self._unreachable("cannot reach the artifact store", exc) from exc

    def _remote(self, sha256: str) -> str:
        return f"{self.root}/{_key(sha256)}"

    def _unreachable(self, what: str, exc: Exception) -> ArtifactUnavailable:
        return ArtifactUnavailable(f"{what} {self.url}: {type(exc).__name__}: {exc}")

    def put(self, stream: BinaryIO) -> tuple[str, int]:
        # The blob is spooled (and hashed) into the cache first: its name is its hash, and a
        # server that pushed a model loads it again from there without downloading it.
        sha, size = self.cache.put(stream)
        if self.exists(sha):
            return sha, size
        final = self._remote(sha)
        local = str(self.cache.local_path(sha))
        try:
            if self.atomic:
                self.fs.put_file(local, final)
            else:
                tmp = f"{self.root}/.incoming/{uuid.uuid4().hex}"
                self.fs.put_file(local, tmp)
                self.fs.mv(tmp, final)
            self.fs.invalidate_cache(final)
            stored = self.fs.size(final)
        except Exception as exc:
            raise self._unreachable(f"cannot write artifact {sha} to", exc) from exc
        if stored != size:
            raise ArtifactUnavailable(
                f"artifact {sha} in {self.url} has {stored} bytes after upload, expected {size}"
            )
        return sha, size

    def exists(self, sha256: str) -> bool:
        path = self._remote(sha256)
        try:
            self.fs.invalidate_cache(path)  # another server may have written it since
            return bool(self.fs.exists(path))
        except Exception as exc:
            raise self._unreachable("cannot reach the artifact store", exc) from exc

    def local_path(self, sha256: str) -> Path:
        if self.cache.exists(sha256):  # checked when it came in
            return self.cache.local_path(sha256)
        tmp = self.cache.incoming()
        try:
            try:
                self.fs.get_file(self._remote(sha256), str(tmp))
            except FileNotFoundError:
                raise ArtifactUnavailable(f"artifact {sha256} is missing from {self.url}") from None
            except Exception as exc:
                raise self._unreachable(f"cannot read artifact {sha256} from", exc) from exc
            actual = sha256_file(tmp)
            if actual != sha256:
                raise ArtifactUnavailable(
                    f"artifact {sha256} in {self.url} is corrupt: its content has sha256 {actual}"
                )
            return self.cache.adopt(tmp, sha256)
        finally:
            tmp.unlink(missing_ok=True)


def is_remote(location: str) -> bool:
    """Whether an artifact location is a URL (``s3://...``) rather than a local folder."""
    return "://" in location and not location.startswith("file://")


def open_artifact_store(
    location: str, *, options: dict[str, Any] | None = None, cache: Path | None = None
) -> LocalArtifactStore | RemoteArtifactStore:
    """The artifact store at a location: a local folder, or an fsspec URL read through
    ``cache`` (a local folder) with fsspec storage ``options``."""
    if not is_remote(location):
        return LocalArtifactStore(location.removeprefix("file://"))
    if cache is None:
        cache = Path(tempfile.gettempdir()) / "modelport-artifact-cache"
    return RemoteArtifactStore(location, cache, options or {})


def artifact_store(settings: Settings) -> LocalArtifactStore | RemoteArtifactStore:
    """The artifact store the settings describe (a remote one cached in the home folder)."""
    return open_artifact_store(
        settings.artifacts_location,
        options=settings.artifacts_options,
        cache=settings.home / "cache" / "artifacts",
    )
