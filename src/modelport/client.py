"""``modelport.Client``: the Python client of a modelport server.

    >>> from modelport import Client
    >>> mp = Client("http://127.0.0.1:8000", key="mp_...")
    >>> mp.push("churn", estimator, train_data=df, alias="production")
    >>> out = mp.predict("churn", [{"tenure": 3, "plan": "pro"}])
    >>> mp.feedback(out["prediction_ids"][0], label=1)

Errors come back as the same exception classes the server raises (``modelport.errors``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from . import errors
from .flavors import libraries_for, serialize

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"


def _error_classes() -> dict[str, type[errors.ModelportError]]:
    found: dict[str, type[errors.ModelportError]] = {}
    stack: list[type[errors.ModelportError]] = [errors.ModelportError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


_BY_CODE = _error_classes()
_BY_STATUS: dict[int, type[errors.ModelportError]] = {
    400: errors.InvalidRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.InvalidInput,
    503: errors.StoreUnavailable,
}


def raise_for_error(response: httpx.Response) -> None:
    """Turn an error response into the matching :class:`~modelport.errors.ModelportError`."""
    if response.status_code < 400:
        return
    try:
        body = response.json()["error"]
        code, message, details = body["code"], body["message"], body.get("details") or []
    except Exception:
        code, message, details = "", response.text[:300] or response.reason_phrase, []
    cls = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code, errors.ModelportError)
    exc = cls(message, details=details)
    exc.status_code = response.status_code
    raise exc


#: The most values of training data a push sends as the drift reference sample.
REFERENCE_CELLS = 200_000


class Client:
    """A modelport server at ``url``, called with ``key``.

    ``url`` and ``key`` default to ``MODELPORT_URL`` and ``MODELPORT_KEY``. ``transport`` lets
    tests hand in an in-process ASGI transport.
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("MODELPORT_URL") or DEFAULT_URL).rstrip("/")
        key = key or os.environ.get("MODELPORT_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON, or raise the server's error."""
        if "json" in kwargs:
            kwargs["content"] = orjson.dumps(kwargs.pop("json"), option=orjson.OPT_SERIALIZE_NUMPY)
            kwargs["headers"] = {
                **(kwargs.get("headers") or {}),
                "Content-Type": "application/json",
            }
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.StoreUnavailable(
                f"cannot reach the modelport server at {self.url}: {exc}"
            ) from exc
        raise_for_error(response)
        return response.json()

    def _dict(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return typing.cast("dict[str, Any]", self._call(method, path, **kwargs))

    def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        return typing.cast("list[dict[str, Any]]", self._call(method, path, **kwargs))

    # -- registry ---------------------------------------------------------------------------------

    def create_model(
        self, name: str, *, task: str = "other", description: str = ""
    ) -> dict[str, Any]:
        return self._dict(
            "POST", "/v1/models", json={"name": name, "task": task, "description": description}
        )

    def models(self) -> list[dict[str, Any]]:
        return self._list("GET", "/v1/models")

    def model(self, name: str) -> dict[str, Any]:
        return self._dict("GET", f"/v1/models/{name}")

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/v1/models/{name}/versions")

    def version(self, name: str, version: int, *, stats: bool = False) -> dict[str, Any]:
        params = {"stats": "true"} if stats else None
        return self._dict("GET", f"/v1/models/{name}/versions/{version}", params=params)

    def push(
        self,
        name: str,
        model: Any,
        *,
        alias: str | None = None,
        schema: Mapping[str, Any] | str | Path | None = None,
        train_data: str | Path | pd.DataFrame | None = None,
        target: str | None = None,
        commit: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        task: str | None = None,
        description: str | None = None,
        flavor: str | None = None,
        strict: bool = False,
        segment: str | None = None,
        deterministic: bool | None = None,
    ) -> dict[str, Any]:
        """Push a model (a file path, or an in-memory estimator or object) as a new version.

        ``segment``: the segment of a segmented model the version answers for (with ``alias``,
        ``<alias>@<segment>`` is set). ``deterministic``: whether the prediction cache may
        keep its answers (default: true for scikit-learn estimators, false for custom code).

        The answer carries a ``compatibility`` report: which consumers' recent payloads the new
        schema would reject. With ``strict`` such a push is refused (Incompatible).

        In-memory scikit-learn estimators are saved with skops (safe to load); other objects with
        cloudpickle (admin keys only). ``train_data`` (CSV/Parquet path or DataFrame) gives the
        schema, training statistics and the data fingerprint; ``target`` names its label column.
        """
        meta: dict[str, Any] = {}
        if isinstance(model, str | Path):
            path = Path(model)
            if path.is_dir():
                blob, filename = _zip_dir(path), path.name + ".zip"
            else:
                blob, filename = path.read_bytes(), path.name
        else:
            blob, flavor_made = serialize(model)
            flavor = flavor or flavor_made
            filename = f"{name}.{'skops' if flavor_made == 'sklearn' else 'pkl'}"
            libs = libraries_for(flavor_made, model)
            meta["environment"] = {"python": libs.pop("python"), "libraries": libs}
        if schema is not None:
            meta["schema"] = (
                json.loads(Path(schema).read_text())
                if isinstance(schema, str | Path)
                else dict(schema)
            )
        if train_data is not None:
            meta.update(
                train_data_meta(train_data, target, model, explicit_schema=schema is not None)
            )
        for key, value in (
            ("alias", alias),
            ("commit", commit),
            ("metrics", dict(metrics) if metrics else None),
            ("params", dict(params) if params else None),
            ("task", task),
            ("description", description),
            ("flavor", flavor),
            ("strict", strict or None),
            ("segment", segment),
            ("deterministic", deterministic),
        ):
            if value is not None:
                meta[key] = value
        return self._dict(
            "POST",
            f"/v1/models/{name}/versions",
            files={"artifact": (filename, blob, "application/octet-stream")},
            data={"metadata": orjson.dumps(meta, option=orjson.OPT_SERIALIZE_NUMPY).decode()},
        )

    def promote(
        self, name: str, version: int, *, alias: str = "production", reason: str = ""
    ) -> dict[str, Any]:
        return self._dict(
            "PUT", f"/v1/models/{name}/aliases/{alias}", json={"version": version, "reason": reason}
        )

    def rollback(self, name: str, *, alias: str = "production", reason: str = "") -> dict[str, Any]:
        return self._dict(
            "POST", f"/v1/models/{name}/aliases/{alias}/rollback", json={"reason": reason}
        )

    def segments(self, name: str) -> dict[str, Any]:
        """A model's segment key, its segments (versions, aliases) and which are loaded."""
        return self._dict("GET", f"/v1/models/{name}/segments")

    def set_segment_key(self, name: str, field: str | None) -> dict[str, Any]:
        """A pushed model's segment key (None removes it)."""
        return self._dict("PUT", f"/v1/models/{name}/segments", json={"field": field})

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        params = {"alias": alias} if alias else None
        return self._list("GET", f"/v1/models/{name}/aliases/history", params=params)

    # -- the learning loop --------------------------------------------------------------------

    def algorithms(self) -> list[dict[str, Any]]:
        """The built-in algorithms with their parameters and defaults."""
        return self._list("GET", "/v1/algorithms")

    def create_from_algorithm(
        self,
        name: str,
        algorithm: str,
        *,
        schema: Mapping[str, Any],
        target: str,
        params: Mapping[str, Any] | None = None,
        classes: Sequence[Any] | None = None,
        online: Mapping[str, Any] | None = None,
        description: str = "",
        segment_by: str | None = None,
    ) -> dict[str, Any]:
        """A model made from a built-in algorithm; it learns from observations (with
        ``segment_by``, one instance per value of that input field)."""
        body: dict[str, Any] = {
            "name": name,
            "algorithm": algorithm,
            "schema": dict(schema),
            "target": target,
            "description": description,
        }
        for key, value in (("params", params), ("classes", classes), ("online", online)):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else list(value)
        if segment_by is not None:
            body["segment_by"] = segment_by
        return self._dict("POST", "/v1/models", json=body)

    def observe(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send labelled rows (the fields and the target); bad rows come back in ``rejected``.

        With ``idempotency_key``, sending the same call again stores nothing more.
        """
        if not isinstance(rows, Sequence):
            frame = rows.astype(object).where(rows.notna(), None)
            rows = frame.to_dict("records")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        return self._dict(
            "POST",
            f"/v1/models/{name}/observations",
            json={"observations": list(rows)},
            headers=headers,
        )

    def ingest(
        self, name: str, path: str | Path, *, chunk_rows: int = 5000, progress: bool = False
    ) -> dict[str, Any]:
        """Send a CSV or Parquet file of labelled rows in chunks (a progress bar with
        ``progress``); totals of accepted and rejected rows, rejections with file row numbers."""
        from .inputs.inference import read_table

        # A CSV goes as CSV text, so the server reads each cell against the model's schema
        # (a bad cell rejects its own row only); Parquet columns are typed and go as JSON.
        csv = not str(path).lower().endswith((".parquet", ".pq"))
        frame = read_table(str(path), text=csv)
        accepted, rejected = 0, []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(frame), unit="rows", desc=f"ingest {name}")
        try:
            for start in range(0, len(frame), chunk_rows):
                chunk = frame.iloc[start : start + chunk_rows]
                try:
                    out = self._observe_csv(name, chunk) if csv else self.observe(name, chunk)
                    accepted += out["accepted"]
                    rejected += [{**r, "index": r["index"] + start} for r in out["rejected"]]
                except errors.InvalidInput as exc:  # every row of the chunk was bad
                    rejected += [{**d, "index": d.get("row", 0) + start} for d in exc.details]
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return {"model": name, "rows": len(frame), "accepted": accepted, "rejected": rejected}

    def _observe_csv(self, name: str, chunk: pd.DataFrame) -> dict[str, Any]:
        text = chunk.to_csv(index=False).encode()
        return self._dict(
            "POST",
            f"/v1/models/{name}/observations",
            files={"file": ("observations.csv", text, "text/csv")},
        )

    def snapshot(self, name: str) -> dict[str, Any]:
        """Snapshot the observations as a dataset (its id names it in a retrain)."""
        return self._dict("POST", f"/v1/models/{name}/datasets")

    def job(self, job_id: int) -> dict[str, Any]:
        return self._dict("GET", f"/v1/jobs/{job_id}")

    def jobs(self, name: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/v1/models/{name}/jobs")

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self._dict("POST", f"/v1/jobs/{job_id}/cancel")

    def retrain(self, name: str, **params: Any) -> dict[str, Any]:
        """Queue a retrain (``seed``, ``holdout``, ``dataset``, ``params``); returns the job."""
        return self._dict("POST", f"/v1/models/{name}/jobs", json={"type": "retrain", **params})

    def replay(self, name: str, version: int, **params: Any) -> dict[str, Any]:
        """Queue a replay of logged traffic through ``version`` (``since``, ``until``,
        ``consumer``, ``limit``); returns the job."""
        body = {"type": "replay", "version": version, **params}
        return self._dict("POST", f"/v1/models/{name}/jobs", json=body)

    def artifact(self, name: str, version: int, *, sha256: str | None = None) -> bytes:
        """A version's artifact bytes (predict and read scopes), checked against its sha256."""
        try:
            response = self._http.get(f"/v1/models/{name}/versions/{version}/artifact")
        except httpx.TransportError as exc:
            raise errors.StoreUnavailable(
                f"cannot reach the modelport server at {self.url}: {exc}"
            ) from exc
        raise_for_error(response)
        data = response.content
        expected = sha256 or response.headers.get("X-Artifact-SHA256")
        if expected is None or hashlib.sha256(data).hexdigest() != expected:
            raise errors.ArtifactRejected(
                f"the artifact of {name} version {version} does not match the sha256 the "
                "registry recorded: not loading it",
                details=[{"field": "artifact", "reason": "sha256 mismatch"}],
            )
        return data

    def start_run(self, name: str, lineage: Mapping[str, Any]) -> dict[str, Any]:
        """Record the start of a batch scoring run (a ``score`` job); returns the job."""
        return self._dict("POST", f"/v1/models/{name}/jobs", json={"type": "score", **lineage})

    def report_run(self, run_id: int, progress: float, message: str = "") -> dict[str, Any]:
        """A scoring run's progress (and heartbeat); the job says if a cancel was requested."""
        body = {"progress": progress, "message": message}
        return self._dict("POST", f"/v1/jobs/{run_id}/progress", json=body)

    def finish_run(
        self, run_id: int, status: str, *, result: Any = None, error: str | None = None
    ) -> dict[str, Any]:
        body = {"status": status, "result": result, "error": error}
        return self._dict("POST", f"/v1/jobs/{run_id}/finish", json=body)

    def score(
        self,
        name: str,
        input: str | os.PathLike[str] | None,
        output: str | os.PathLike[str] | None,
        *,
        version: int | None = None,
        alias: str | None = None,
        chunk_rows: int = 10_000,
        id_column: str | None = None,
        engine: str = "pandas",
        progress: bool = False,
        spark_conf: Mapping[str, str] | None = None,
        from_sql: str | None = None,
        to_table: str | None = None,
        db: str | None = None,
    ) -> dict[str, Any]:
        """Score a CSV or Parquet file (or the rows of ``from_sql``) in chunks into ``output``
        (or the table ``to_table``), rejected rows beside it (``<stem>.rejects.<ext>``, or the
        table ``<to_table>_rejects``); ``db`` is the database's SQLAlchemy URL. Returns the
        finished run (a ``score`` job). See docs/batch.md.
        """
        from .batch.scoring import Request, score

        request = Request(
            name,
            None if input is None else os.fspath(input),
            None if output is None else os.fspath(output),
            version=version,
            alias=alias,
            chunk_rows=chunk_rows,
            id_column=id_column,
            engine=engine,
            progress=progress,
            spark_conf=dict(spark_conf or {}),
            sql=from_sql,
            table=to_table,
            db=db,
        )
        return score(self, request)

    def wait_job(
        self, job_id: int, *, timeout: float = 600, interval: float = 0.2
    ) -> dict[str, Any]:
        """Poll a job until it ends (or ``timeout`` seconds pass); the job."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                return job
            time.sleep(interval)

    def set_triggers(self, name: str, triggers: Mapping[str, Any] | None) -> dict[str, Any]:
        """When the model retrains by itself (None removes the triggers)."""
        body = {"triggers": dict(triggers) if triggers is not None else None}
        return self._dict("PUT", f"/v1/models/{name}/triggers", json=body)

    def set_gate(self, name: str, gate: Mapping[str, Any] | None) -> dict[str, Any]:
        """The promotion gate of retrained candidates (None removes it)."""
        body = {"gate": dict(gate) if gate is not None else None}
        return self._dict("PUT", f"/v1/models/{name}/gate", json=body)

    # -- monitoring -------------------------------------------------------------------------------

    def performance(
        self,
        name: str,
        *,
        window: str | float = "24h",
        version: int | None = None,
        buckets: int = 24,
        consumer: str | None = None,
        segment: str | None = None,
    ) -> dict[str, Any]:
        """Live metrics per version from feedback labels, over ``window`` (e.g. ``"7d"``), of
        one consumer's or one segment's predictions when given."""
        params = {
            "window": window,
            "version": version,
            "buckets": buckets,
            "consumer": consumer,
            "segment": segment,
        }
        return self._dict(
            "GET",
            f"/v1/models/{name}/performance",
            params={k: v for k, v in params.items() if v is not None},
        )

    def drift(
        self, name: str, *, window: str | float | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """Per version: inputs and predictions of the window against the version's reference."""
        params = {"window": window, "version": version}
        return self._dict(
            "GET",
            f"/v1/models/{name}/drift",
            params={k: v for k, v in params.items() if v is not None},
        )

    def monitoring(self, name: str) -> dict[str, Any]:
        """A model's monitoring settings (drift thresholds, window, webhook)."""
        return self._dict("GET", f"/v1/models/{name}/monitoring")

    def set_monitoring(self, name: str, monitoring: Mapping[str, Any] | None) -> dict[str, Any]:
        """Set (None removes) a model's monitoring settings."""
        body = {"monitoring": dict(monitoring) if monitoring is not None else None}
        return self._dict("PUT", f"/v1/models/{name}/monitoring", json=body)

    def set_reference(
        self, name: str, version: int, *, since: str | float, until: str | float | None = None
    ) -> dict[str, Any]:
        """Make a window of a version's own traffic its drift reference."""
        body = {"since": since, **({"until": until} if until is not None else {})}
        return self._dict("PUT", f"/v1/models/{name}/versions/{version}/reference", json=body)

    # -- releases ---------------------------------------------------------------------------------

    def traffic(self, name: str) -> dict[str, Any]:
        """The traffic policy of a model's unversioned routes, with its revision."""
        return self._dict("GET", f"/v1/models/{name}/traffic")

    def set_traffic(self, name: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the traffic policy (single, split, shadow, bandit or canary)."""
        return self._dict("PUT", f"/v1/models/{name}/traffic", json=dict(policy))

    def consumers(self, name: str) -> list[dict[str, Any]]:
        return self._list("GET", f"/v1/models/{name}/consumers")

    def pin(
        self,
        name: str,
        consumer: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        adapter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Pin ``consumer`` to a version or an alias of ``name`` (neither: follow the policy),
        and give it an adapter for its older payloads."""
        pin = {"version": version} if version is not None else {"alias": alias} if alias else None
        body = {"pin": pin, "adapter": dict(adapter) if adapter is not None else None}
        return self._dict("PUT", f"/v1/models/{name}/consumers/{consumer}", json=body)

    def unpin(self, name: str, consumer: str) -> dict[str, Any]:
        """Remove a consumer's pin and adapter."""
        return self._dict("DELETE", f"/v1/models/{name}/consumers/{consumer}")

    def set_adapter(self, name: str, adapter: Mapping[str, Any] | None) -> dict[str, Any]:
        """The model-wide adapter (None removes it)."""
        body = {"adapter": dict(adapter) if adapter is not None else None}
        return self._dict("PUT", f"/v1/models/{name}/adapter", json=body)

    def events(self, name: str, limit: int = 200) -> list[dict[str, Any]]:
        """Release events, newest first (policies, pins, adapters, automatic actions, aliases)."""
        return self._list("GET", f"/v1/models/{name}/events", params={"limit": limit})

    def experiment(
        self, name: str, *, metric: str | None = None, revision: int | None = None
    ) -> dict[str, Any]:
        """The experiment report of the current (or a given) traffic revision."""
        params = {k: v for k, v in (("metric", metric), ("revision", revision)) if v is not None}
        return self._dict("GET", f"/v1/models/{name}/experiment", params=params)

    # -- predictions ------------------------------------------------------------------------------

    def predict(
        self,
        name: str,
        inputs: Sequence[Mapping[str, Any]] | pd.DataFrame,
        *,
        version: int | None = None,
        alias: str | None = None,
        request_id: str | None = None,
        unit_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Score records (a list of dicts) or a DataFrame; returns predictions and their ids.

        ``unit_id`` (sent as ``X-Unit-ID``) keeps a unit (a user, a session) on one arm of a
        split traffic policy. ``idempotency_key`` (sent as ``Idempotency-Key``): a retry of the
        call gets the first answer, from the ledger, instead of being scored again.
        """
        body: dict[str, Any]
        if not isinstance(inputs, Sequence):
            frame = inputs.astype(object).where(inputs.notna(), None)
            body = {"columns": [str(c) for c in frame.columns], "data": frame.to_numpy().tolist()}
        else:
            body = {"inputs": list(inputs)}
        if version is not None:
            body["version"] = version
        if alias is not None:
            body["alias"] = alias
        headers = {"X-Request-ID": request_id} if request_id else {}
        if unit_id is not None:
            headers["X-Unit-ID"] = unit_id
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self._dict("POST", f"/v1/models/{name}/predict", json=body, headers=headers)

    def feedback(
        self,
        prediction_id: str | Iterable[Mapping[str, Any]],
        *,
        label: Any = None,
        reward: float | None = None,
    ) -> dict[str, Any]:
        """Send a label and/or reward for one prediction, or a list of feedback items."""
        if isinstance(prediction_id, str):
            item: dict[str, Any] = {"prediction_id": prediction_id}
            if label is not None:
                item["label"] = label
            if reward is not None:
                item["reward"] = reward
            items = [item]
        else:
            items = [dict(i) for i in prediction_id]
        return self._dict("POST", "/v1/feedback", json={"feedback": items})

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        return self._dict("GET", f"/v1/predictions/{prediction_id}")

    def predictions(self, name: str, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._dict("GET", f"/v1/models/{name}/predictions", params=params)

    # -- keys -------------------------------------------------------------------------------------

    def create_key(self, name: str, scopes: Sequence[str]) -> dict[str, Any]:
        return self._dict("POST", "/v1/keys", json={"name": name, "scopes": list(scopes)})

    def list_keys(self) -> list[dict[str, Any]]:
        return self._list("GET", "/v1/keys")

    def revoke_key(self, key_id: int) -> dict[str, Any]:
        return self._dict("DELETE", f"/v1/keys/{key_id}")

    def health(self) -> dict[str, Any]:
        return self._dict("GET", "/v1/health")


def _zip_dir(path: Path) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(path).as_posix())
    return buf.getvalue()


def frame_fingerprint(df: pd.DataFrame) -> str:
    """sha256 over a DataFrame's contents (for frames pushed without a file)."""
    import pandas as pd

    digest = hashlib.sha256(",".join(map(str, df.columns)).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _reference_sample(df: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    """A seeded sample of the training rows, which the server scores as the version's drift
    reference (at most REFERENCE_CELLS values, to keep the push body small)."""
    from .monitoring.drift import REFERENCE_ROWS, sample_rows

    size = max(1, min(REFERENCE_ROWS, REFERENCE_CELLS // max(1, len(names))))
    picked = sample_rows(list(range(len(df))), size)
    rows = orjson.loads(df[names].iloc[picked].to_json(orient="values"))
    return {"fields": list(names), "rows": rows, "total": len(df)}


def train_data_meta(
    data: str | Path | pd.DataFrame, target: str | None, model: Any, *, explicit_schema: bool
) -> dict[str, Any]:
    """Schema, statistics and fingerprint from training data, computed on the client."""
    from .inputs.inference import infer_schema, read_table
    from .store.artifacts import sha256_file

    if isinstance(data, str | Path):
        df = read_table(str(data))
        fingerprint = sha256_file(data)
    else:
        df = data
        fingerprint = frame_fingerprint(df)
    if target is not None:
        if target not in df.columns:
            raise errors.InvalidInput(
                f"the training data has no target column {target!r}",
                details=[{"field": "target", "reason": "not a column of the training data"}],
            )
        df = df.drop(columns=[target])
    names = getattr(model, "feature_names_in_", None)
    fields = [str(n) for n in names] if names is not None else None
    schema, stats = infer_schema(df, fields=fields)
    meta: dict[str, Any] = {
        "train_data_sha256": fingerprint,
        "train_stats": stats,
        "reference_sample": _reference_sample(df, schema.names),
    }
    if not explicit_schema:
        meta["schema"] = schema.to_dict()
        meta["schema_from_train_data"] = True
    return meta
