"""The prediction cache: answers of one version kept for rows it has seen, least recently used
first out.

A version's cache lives beside its batcher (see
:meth:`modelport.serving.calls.ModelCalls.batcher`) and is made only when the model's serving settings give it entries (``cache_max_entries``) and the
version is deterministic: the same row always gets the same answer. A row's key is its values
after adapting and validating, in schema order (the bytes of a numeric row; a tuple otherwise),
so two payloads that differ only in field order or in defaults filled in share an entry. The
cache belongs to one version: moving an alias to another version reaches another cache, and
unloading a version drops its cache with it.

Hits are still predictions: each gets its own id in the ledger, marked ``cached``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..inputs.table import Table


def is_deterministic(lineage: dict[str, Any], custom_code: bool) -> bool:
    """Whether a version may be cached: as its push declared (``deterministic``), else true
    for scikit-learn estimators and false for custom code (which may read a clock or draw
    random numbers)."""
    declared = lineage.get("deterministic")
    return bool(declared) if declared is not None else not custom_code


class PredictionCache:
    """At most ``max_entries`` rows' answers (prediction, probability row or None), LRU."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[Any, tuple[Any, np.ndarray | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, keys: Sequence[Any]) -> list[tuple[Any, np.ndarray | None] | None]:
        """Each key's entry, or None; the entries found become the most recently used."""
        entries = self._entries
        found: list[tuple[Any, np.ndarray | None] | None] = []
        for key in keys:
            entry = entries.get(key)
            if entry is not None:
                entries.move_to_end(key)
            found.append(entry)
        hits = sum(e is not None for e in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def store(self, keys: Sequence[Any], predictions: list[Any], probas: np.ndarray | None) -> None:
        """Keep the answers of ``keys`` (in order), dropping the least recently used beyond
        ``max_entries``."""
        entries = self._entries
        for i, key in enumerate(keys):
            # A copy: a view would keep the whole batch's array alive.
            entries[key] = (predictions[i], None if probas is None else probas[i].copy())
            entries.move_to_end(key)
        over = len(entries) - self.max_entries
        for _ in range(max(0, over)):
            entries.popitem(last=False)
        self.evictions += max(0, over)

    def stats(self) -> dict[str, Any]:
        asked = self.hits + self.misses
        return {
            "max_entries": self.max_entries,
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "hit_rate": self.hits / asked if asked else None,
        }


def merge(
    rows: Table,
    found: list[tuple[Any, np.ndarray | None] | None],
    missed: list[int],
    scored: tuple[Any, np.ndarray | None] | None,
) -> tuple[list[Any], np.ndarray | None, str]:
    """The answers of all ``rows``: cached entries where ``found``, the model's ``scored``
    answers for the rows at ``missed``; and the ledger's "0"/"1" flag per row."""
    preds: list[Any] = [e[0] if e is not None else None for e in found]
    probas_rows: list[np.ndarray | None] = [e[1] if e is not None else None for e in found]
    if scored is not None:
        new_preds, new_probas = scored
        plain = new_preds.tolist() if isinstance(new_preds, np.ndarray) else list(new_preds)
        for j, i in enumerate(missed):
            preds[i] = plain[j]
            probas_rows[i] = None if new_probas is None else new_probas[j]
    probas = None
    if probas_rows and probas_rows[0] is not None:
        probas = np.vstack(probas_rows)  # type: ignore[arg-type]
    flags = "".join("1" if e is not None else "0" for e in found)
    return preds, probas, flags
