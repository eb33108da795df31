"""Models this server has loaded and vetted, kept as joblib files for fast start-ups.

Loading a skops file is safe but slow to begin with: skops imports every scikit-learn estimator
before it reads a file (about 1.4 s and 15 MB per process, measured). Once a server has loaded
an artifact itself, it keeps the loaded object under ``<home>/cache``, named by the artifact's
sha256 and the versions of the libraries that wrote it; the next start (and every worker)
loads that instead. The cache is written only by the server, from objects it loaded and
checked, next to its own database and artifact folder, and is trusted as they are (the artifact
folder already holds admin-pushed pickles the server loads on start). ``model_cache = false``
turns it off. A cache file that cannot be read is deleted and the artifact loaded again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import tempfile
from pathlib import Path

from .base import LoadedModel, _wrap, load

log = logging.getLogger("modelport.flavors")

#: Flavors worth caching: the ones whose loading is slower than unpickling.
CACHED_FLAVORS = frozenset({"sklearn"})


def _libraries_key() -> str:
    parts = [f"python={platform.python_version()}"]
    for name in ("scikit-learn", "numpy", "scipy", "joblib"):
        try:
            parts.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name}=-")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:12]


class LoadCache:
    """Loads artifacts, through the cache where the flavor is cached (``folder`` None: never)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._key = _libraries_key() if folder is not None else ""

    def path(self, sha256: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{sha256}-{self._key}.joblib"

    def load(self, flavor: str, sha256: str, artifact: Path) -> LoadedModel:
        """The artifact's model: from the cache when it holds it, else loaded and then kept."""
        cached = self.path(sha256) if flavor in CACHED_FLAVORS else None
        if cached is not None and cached.exists():
            import joblib

            from .moved import alias_moved_modules

            alias_moved_modules()
            try:
                return _wrap(joblib.load(cached), flavor)
            except Exception as exc:
                log.warning("dropping unreadable model cache %s: %s", cached.name, exc)
                cached.unlink(missing_ok=True)
        # Stored artifacts were vetted (and trust decided) when they were pushed.
        loaded = load(flavor, artifact, trust_code=True)
        self.keep(flavor, sha256, loaded)
        return loaded

    def keep(self, flavor: str, sha256: str, loaded: LoadedModel) -> None:
        """Write the loaded model to the cache; a failure is logged, never raised."""
        target = self.path(sha256) if flavor in CACHED_FLAVORS else None
        if target is None or target.exists():
            return
        import joblib

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    joblib.dump(loaded.obj, fh)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except Exception as exc:
            log.warning("cannot write the model cache %s: %s", target.name, exc)
