"""Object stores: one contract, run on a local folder and on moto's S3 server over HTTP."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC
from pathlib import Path

import boto3
import httpx
import pytest

from lora_pipelines.domain.keys import InvalidIdError
from lora_pipelines.store.objects import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    ObjectStore,
    open_store,
    open_store_from_settings,
)
from lora_pipelines.store.objects.files import atomic_write
from lora_pipelines.store.objects.local import LocalObjectStore
from lora_pipelines.store.objects.s3 import MIB, S3ObjectStore


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    endpoint, bucket = request.getfixturevalue("s3_bucket")
    return S3ObjectStore(bucket, "lp", endpoint_url=endpoint, region_name="us-east-1")


def _raw_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def _fetch(url: str) -> bytes:
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(url).path)).read_bytes()
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.content


def test_put_get_stat_and_delete(store: ObjectStore) -> None:
    data = os.urandom(4096)
    info = store.put_bytes("loras/flux-character-7/job-1.safetensors", data, content_type="application/octet-stream")

    assert info.size_bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get_bytes("loras/flux-character-7/job-1.safetensors") == data
    assert store.exists("loras/flux-character-7/job-1.safetensors")
    assert store.stat("loras/flux-character-7/job-1.safetensors").size_bytes == len(data)
    assert store.sha256("loras/flux-character-7/job-1.safetensors") == info.sha256

    store.delete("loras/flux-character-7/job-1.safetensors")
    assert not store.exists("loras/flux-character-7/job-1.safetensors")
    store.delete("loras/flux-character-7/job-1.safetensors")  # deleting twice is fine


def test_put_file_and_download_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(200_000))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    store.put_file("datasets/flux-character-1/abc/001.png", source)
    info = store.download_file("datasets/flux-character-1/abc/001.png", tmp_path / "out" / "copy.bin", expected)

    assert (tmp_path / "out" / "copy.bin").read_bytes() == source.read_bytes()
    assert info.sha256 == expected
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.bin"]  # no temp file left behind


def test_download_with_wrong_checksum_leaves_no_file(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("a/b.bin", b"payload")
    with pytest.raises(ChecksumMismatchError):
        store.download_file("a/b.bin", tmp_path / "dl" / "b.bin", expected_sha256="0" * 64)
    assert list((tmp_path / "dl").iterdir()) == []


def test_missing_key_raises_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    for call in (store.get_bytes, store.stat, store.sha256):
        with pytest.raises(ObjectNotFoundError, match="nope/missing.bin"):
            call("nope/missing.bin")
    with pytest.raises(ObjectNotFoundError):
        store.download_file("nope/missing.bin", tmp_path / "x.bin")
    assert not store.exists("nope/missing.bin")


def test_list_by_prefix_is_sorted_and_scoped(store: ObjectStore) -> None:
    for key in ["loras/flux-character-2/b.safetensors", "loras/flux-character-2/a.safetensors",
                "loras/flux-character-20/c.safetensors", "generations/1/000.png"]:  # fmt: skip
        store.put_bytes(key, key.encode())

    assert [i.key for i in store.list("loras/flux-character-2/")] == [
        "loras/flux-character-2/a.safetensors",
        "loras/flux-character-2/b.safetensors",
    ]
    assert [i.key for i in store.list("loras/flux-character-2")] == [
        "loras/flux-character-2/a.safetensors",
        "loras/flux-character-2/b.safetensors",
        "loras/flux-character-20/c.safetensors",
    ]
    assert len(store.list()) == 4
    assert store.list("reports/") == []
    assert {i.size_bytes for i in store.list("generations/")} == {len(b"generations/1/000.png")}


@pytest.mark.parametrize(
    "key", ["../escape", "a/../../etc/passwd", "/abs/path", "", "a//b", "a\\b", ".hidden", "x" * 200]
)
def test_unsafe_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidIdError):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidIdError):
        store.exists(key)


def test_presigned_url_serves_the_bytes(store: ObjectStore) -> None:
    data = os.urandom(1000)
    store.put_bytes("generations/9/000.png", data, content_type="image/png")
    url = store.presigned_url("generations/9/000.png", expires_seconds=300)
    assert _fetch(url) == data


def test_verify_detects_content_changed_behind_the_stores_back(store: ObjectStore, tmp_path: Path) -> None:
    original = store.put_bytes("loras/one-2.1-character-3/j.safetensors", b"real weights").sha256
    assert store.verify("loras/one-2.1-character-3/j.safetensors", original).sha256 == original

    if isinstance(store, S3ObjectStore):
        _raw_client(store.endpoint_url).put_object(
            Bucket=store.bucket, Key="lp/loras/one-2.1-character-3/j.safetensors", Body=b"bit rot!!!!!"
        )
    else:
        (tmp_path / "objects" / "loras/one-2.1-character-3/j.safetensors").write_bytes(b"bit rot!!!!!")

    with pytest.raises(ChecksumMismatchError, match=original):
        store.verify("loras/one-2.1-character-3/j.safetensors", original)
    with pytest.raises(ChecksumMismatchError):
        store.get_bytes("loras/one-2.1-character-3/j.safetensors", expected_sha256=original)


def test_s3_uri_and_repr_carry_no_credentials(s3_bucket) -> None:
    endpoint, bucket = s3_bucket
    store = S3ObjectStore(bucket, "/prod/", endpoint_url=endpoint)
    assert store.uri("a/b.png") == f"s3://{bucket}/prod/a/b.png"
    assert store.url == f"s3://{bucket}/prod"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in repr(store)
    assert os.environ["AWS_ACCESS_KEY_ID"] not in repr(store)


def test_s3_multipart_upload_over_the_threshold(s3_bucket, tmp_path: Path) -> None:
    endpoint, bucket = s3_bucket
    store = S3ObjectStore(bucket, endpoint_url=endpoint, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    source = tmp_path / "big.safetensors"
    source.write_bytes(os.urandom(11 * MIB + 123))

    info = store.put_file("loras/flux-character-1/big.safetensors", source)

    head = _raw_client(endpoint).head_object(Bucket=bucket, Key="loras/flux-character-1/big.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert head["Metadata"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest() == info.sha256
    assert store.verify("loras/flux-character-1/big.safetensors").sha256 == info.sha256


def test_s3_plain_read_checks_the_recorded_sha256(s3_bucket) -> None:
    endpoint, bucket = s3_bucket
    store = S3ObjectStore(bucket, endpoint_url=endpoint)
    info = store.put_bytes("a/weights.bin", b"good bytes")
    # same metadata, different bytes: what silent corruption looks like
    _raw_client(endpoint).put_object(Bucket=bucket, Key="a/weights.bin", Body=b"bad bytes!",
                                     Metadata={"sha256": info.sha256})

    with pytest.raises(ChecksumMismatchError):
        store.get_bytes("a/weights.bin")
    with pytest.raises(ChecksumMismatchError):
        store.verify("a/weights.bin")


def test_s3_upload_corrupted_in_transit_is_deleted_and_raises(s3_bucket) -> None:
    endpoint, bucket = s3_bucket
    store = S3ObjectStore(bucket, endpoint_url=endpoint)

    def flip_bytes(request, **_kwargs):
        body = request.body.read() if hasattr(request.body, "read") else request.body
        request.body = bytes(b ^ 0xFF for b in body)

    store.client.meta.events.register("before-send.s3.PutObject", flip_bytes)
    with pytest.raises(ChecksumMismatchError):
        store.put_bytes("a/in-transit.bin", b"0123456789" * 100)
    assert not store.exists("a/in-transit.bin")


def test_open_store_picks_the_backend(tmp_path: Path, s3_bucket, lp_home: Path) -> None:
    endpoint, bucket = s3_bucket
    assert isinstance(open_store(str(tmp_path / "objs")), LocalObjectStore)
    assert isinstance(open_store((tmp_path / "objs").as_uri()), LocalObjectStore)
    s3 = open_store(f"s3://{bucket}/env/dev", endpoint_url=endpoint)
    assert isinstance(s3, S3ObjectStore) and (s3.bucket, s3.prefix) == (bucket, "env/dev")
    with pytest.raises(ValueError, match="gs://"):
        open_store("gs://bucket/x")
    default = open_store_from_settings()
    assert isinstance(default, LocalObjectStore) and default.root == (lp_home / "objects").resolve()


def test_local_store_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(InvalidIdError, match="outside the store root"):
        store.put_bytes("link/file.bin", b"x")
    assert list((tmp_path / "outside").iterdir()) == []


def test_stat_reports_utc_modification_time(store: ObjectStore) -> None:
    from datetime import datetime, timedelta

    store.put_bytes("a/now.bin", b"x")
    modified = store.stat("a/now.bin").last_modified
    assert modified.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - modified) < timedelta(minutes=5)


def test_s3_requests_carry_no_checksum_headers_r2_refuses(s3_bucket, tmp_path: Path) -> None:
    """boto3 >= 1.36 adds CRC32 checksums (x-amz-checksum-*, aws-chunked trailers) that R2 rejects; single and
    multipart uploads must send none of them."""
    endpoint, bucket = s3_bucket
    store = S3ObjectStore(bucket, endpoint_url=endpoint, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    sent: list[tuple[str, dict[str, str]]] = []
    store.client.meta.events.register(
        "before-send.s3.*",
        lambda request, **_: sent.append((request.url, {k.lower(): str(v) for k, v in request.headers.items()})),
    )
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(6 * MIB))

    store.put_bytes("r2/small.bin", b"small")
    store.put_file("r2/big.bin", source)

    assert len(sent) >= 5  # put + verify read, create + 2 parts + complete + verify read
    for url, headers in sent:
        offending = {k: v for k, v in headers.items()
                     if k.startswith("x-amz-checksum-") or k in {"x-amz-sdk-checksum-algorithm", "x-amz-trailer"}}
        assert not offending, f"{url} sent {offending}"
        assert "aws-chunked" not in headers.get("content-encoding", ""), url


def test_s3_region_is_auto_for_an_endpoint_and_left_to_boto3_for_aws(monkeypatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    r2 = S3ObjectStore("bucket", endpoint_url="https://account.r2.cloudflarestorage.com")
    assert r2.client.meta.region_name == "auto"
    aws = S3ObjectStore("bucket")
    assert aws.client.meta.region_name != "auto"  # "auto" would make boto3 call s3.auto.amazonaws.com
    assert "s3.auto." not in aws.client.meta.endpoint_url


def test_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "loras" / "7.safetensors"
    with atomic_write(dest) as out:
        out.write(b"first version")
    with pytest.raises(RuntimeError, match="connection lost"), atomic_write(dest) as out:
        out.write(b"half of the second")
        raise RuntimeError("connection lost")
    assert dest.read_bytes() == b"first version"
    assert [p.name for p in dest.parent.iterdir()] == ["7.safetensors"]


def test_a_write_in_progress_is_not_an_object_of_the_local_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    with atomic_write(store.root / "loras" / "x.safetensors") as out:
        out.write(b"partial")
        assert store.list() == [] and not store.exists("loras/x.safetensors")
    assert [info.key for info in store.list()] == ["loras/x.safetensors"]
