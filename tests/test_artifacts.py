"""Artifact stores: a local folder and any fsspec URL (S3 on a local S3-compatible server)."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from typing import Any

import pytest

from modelport.errors import ArtifactUnavailable, InvalidRequest
from modelport.settings import Settings, load_settings
from modelport.store.artifacts import (
    LocalArtifactStore,
    RemoteArtifactStore,
    artifact_store,
    open_artifact_store,
)
from tests.conftest import IRIS_COLUMNS, S3Bucket, start_server

BLOB = b"modelport artifact " * 5000
SHA = hashlib.sha256(BLOB).hexdigest()


def _s3(bucket: S3Bucket, cache: Path) -> RemoteArtifactStore:
    store = open_artifact_store(bucket.url(), options=bucket.options, cache=cache)
    assert isinstance(store, RemoteArtifactStore)
    return store


def test_a_folder_or_file_url_is_local_and_any_other_url_is_remote(tmp_path: Path) -> None:
    assert isinstance(open_artifact_store(str(tmp_path / "a")), LocalArtifactStore)
    assert isinstance(open_artifact_store(f"file://{tmp_path / 'b'}"), LocalArtifactStore)
    remote = open_artifact_store("memory://modelport-test/x", cache=tmp_path / "cache")
    assert isinstance(remote, RemoteArtifactStore) and remote.atomic
    with pytest.raises(ArtifactUnavailable, match="gcsfs"):
        open_artifact_store("gs://bucket/x", cache=tmp_path / "cache")


def test_settings_take_storage_options_as_json_and_mask_secrets(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "home": str(tmp_path),
            "artifacts": "memory://modelport-test/settings",
            "artifacts_options": '{"endpoint_url": "http://s3:9000", "secret": "hush",'
            ' "client_kwargs": {"aws_secret_access_key": "hush"}}',
        }
    )
    assert settings.artifacts_options["endpoint_url"] == "http://s3:9000"
    shown = settings.public()["artifacts_options"]
    assert shown == {
        "endpoint_url": "http://s3:9000",
        "secret": "***",
        "client_kwargs": {"aws_secret_access_key": "***"},
    }
    store = artifact_store(settings)
    assert isinstance(store, RemoteArtifactStore)
    assert store.cache.root == tmp_path / "cache" / "artifacts"
    with pytest.raises(InvalidRequest, match=r"artifacts_options: .*not a JSON object"):
        load_settings({"artifacts_options": "{not json"})


def test_storage_options_come_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELPORT_ARTIFACTS_OPTIONS", '{"endpoint_url": "http://s3:9000"}')
    assert load_settings().artifacts_options == {"endpoint_url": "http://s3:9000"}
    monkeypatch.setenv("MODELPORT_ARTIFACTS_OPTIONS", "{not json")
    with pytest.raises(InvalidRequest, match=r"artifacts_options.*Expecting property name"):
        load_settings()


def test_s3_blobs_are_content_addressed_written_once_and_read_through_a_checked_cache(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    writer = _s3(s3_bucket, tmp_path / "writer")
    assert not writer.exists(SHA)
    assert writer.put(io.BytesIO(BLOB)) == (SHA, len(BLOB))
    key = f"artifacts/{SHA[:2]}/{SHA[2:]}"
    s3 = s3_bucket.client()
    assert s3.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read() == BLOB
    # Same content again, from several writers at once: one object, the same bytes.
    threads = [
        threading.Thread(target=lambda: _s3(s3_bucket, tmp_path / "w2").put(io.BytesIO(BLOB)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listed = s3.list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert [o["Key"] for o in listed] == [key]

    reader = _s3(s3_bucket, tmp_path / "reader")  # another server: an empty cache
    assert reader.exists(SHA)
    path = reader.local_path(SHA)
    assert path.read_bytes() == BLOB and path.is_relative_to(tmp_path / "reader")
    assert reader.local_path(SHA) == path  # from the cache now
    assert not [p for p in (tmp_path / "reader").iterdir() if p.name.startswith(".incoming")]


def test_a_missing_or_corrupt_blob_is_a_clear_error_and_never_cached(
    tmp_path: Path, s3_bucket: S3Bucket
) -> None:
    store = _s3(s3_bucket, tmp_path / "cache")
    with pytest.raises(ArtifactUnavailable, match=f"artifact {'0' * 64} is missing from s3://"):
        store.local_path("0" * 64)
    s3_bucket.client().put_object(
        Bucket=s3_bucket.name, Key=f"artifacts/{SHA[:2]}/{SHA[2:]}", Body=b"tampered"
    )
    with pytest.raises(ArtifactUnavailable, match=f"artifact {SHA} in s3://.* is corrupt"):
        store.local_path(SHA)
    assert not store.cache.exists(SHA)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == []


def test_a_missing_bucket_is_a_clear_error(tmp_path: Path, s3_bucket: S3Bucket) -> None:
    missing = open_artifact_store(
        "s3://no-such-bucket-here/x", options=s3_bucket.options, cache=tmp_path / "c"
    )
    with pytest.raises(
        ArtifactUnavailable,
        match=r"cannot write artifact .* to s3://no-such-bucket-here/x: .*bucket does not exist",
    ):
        missing.put(io.BytesIO(BLOB))


# -- servers over S3 ------------------------------------------------------------------------------


def _on_s3(settings: Settings, bucket: S3Bucket, home: Path, **more: Any) -> Settings:
    return settings.model_copy(
        update={
            "home": home,
            "artifacts": bucket.url(),
            "artifacts_options": bucket.options,
            **more,
        }
    )


ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_a_model_pushed_to_s3_is_served_after_a_restart_and_by_a_second_server(
    tmp_path: Path, settings: Settings, s3_bucket: S3Bucket, iris_pipeline: Any, iris_frame: Any
) -> None:
    first = start_server(_on_s3(settings, s3_bucket, tmp_path / "a"))
    try:
        pushed = first.client().push(
            "iris", iris_pipeline, train_data=iris_frame, alias="production"
        )
        sha = pushed["sha256"]
        expected = first.client().predict("iris", [ROW])["predictions"]
    finally:
        first.stop()
    objects = s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]
    assert f"artifacts/{sha[:2]}/{sha[2:]}" in {o["Key"] for o in objects}
    assert not (tmp_path / "a" / "artifacts").exists()  # nothing went to the local folder

    # A restart, and a second server on another port with homes of their own (empty caches).
    again = start_server(_on_s3(settings, s3_bucket, tmp_path / "a2"))
    second = start_server(_on_s3(settings, s3_bucket, tmp_path / "b"))
    try:
        for running in (again, second):
            answer = running.client().predict("iris", [ROW])
            assert answer["version"] == 1 and answer["predictions"] == expected
        assert (tmp_path / "b" / "cache" / "artifacts" / sha[:2] / sha[2:]).exists()
        assert second.http().get("/v1/settings").json()["artifacts"] == s3_bucket.url()
    finally:
        again.stop()
        second.stop()


def test_a_server_whose_blob_is_missing_or_corrupt_answers_503_naming_it(
    tmp_path: Path, settings: Settings, s3_bucket: S3Bucket, iris_pipeline: Any, iris_frame: Any
) -> None:
    first = start_server(_on_s3(settings, s3_bucket, tmp_path / "a"))
    try:
        sha = first.client().push("iris", iris_pipeline, train_data=iris_frame, alias="production")[
            "sha256"
        ]
    finally:
        first.stop()
    key = f"artifacts/{sha[:2]}/{sha[2:]}"
    s3 = s3_bucket.client()
    for home, damage, reason in (
        ("b", lambda: s3.put_object(Bucket=s3_bucket.name, Key=key, Body=b"x"), "is corrupt"),
        ("c", lambda: s3.delete_object(Bucket=s3_bucket.name, Key=key), "is missing from s3://"),
    ):
        damage()
        running = start_server(_on_s3(settings, s3_bucket, tmp_path / home))
        try:
            r = running.http().post("/v1/models/iris/predict", json={"inputs": [ROW]})
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "artifact_unavailable"
            assert sha in error["message"] and reason in error["message"]
        finally:
            running.stop()


def test_a_dataset_snapshot_goes_to_s3_and_a_retrain_elsewhere_reads_it(
    tmp_path: Path, settings: Settings, s3_bucket: S3Bucket
) -> None:
    from modelport.learning.observations import load_dataset

    quick = {"job_poll_seconds": 0.1}
    front = start_server(_on_s3(settings, s3_bucket, tmp_path / "front", job_workers=0))
    worker = start_server(_on_s3(settings, s3_bucket, tmp_path / "worker", **quick))
    try:
        mp = front.client()
        schema = {"fields": [{"name": c, "type": "number"} for c in IRIS_COLUMNS]}
        mp.create_from_algorithm("flowers", "logistic_regression", schema=schema, target="y")
        rows = [
            {**ROW, "petal_length": 1.0 + i / 10, "y": "a" if i < 30 else "b"} for i in range(60)
        ]
        mp.observe("flowers", rows)
        dataset = mp.snapshot("flowers")
        assert dataset["rows"] == 60

        frame = load_dataset(_s3(s3_bucket, tmp_path / "elsewhere"), dataset["id"])
        assert list(frame["petal_length"]) == [r["petal_length"] for r in rows]
        assert list(frame["y"]) == [r["y"] for r in rows]

        job = mp.wait_job(mp.retrain("flowers", dataset=dataset["id"], seed=1)["id"])
        assert job["status"] == "succeeded", job
        version = job["result"]["version"]
        answer = mp.predict("flowers", [{**ROW, "petal_length": 1.0}], version=version)
        assert answer["predictions"] == ["a"]
        assert not (tmp_path / "front" / "artifacts").exists()
    finally:
        front.stop()
        worker.stop()
