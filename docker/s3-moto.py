"""S3 stand-in of compose.yaml's `minio` service where MinIO's images cannot be pulled: moto's S3 server.

``serve``   moto's server on 0.0.0.0:9000. moto keeps objects in memory, so this wrapper gives it a volume: on start
            it loads the objects saved in /data, and on SIGTERM/SIGINT (``docker compose stop/down/restart``) it
            saves every bucket there before exiting. A crash (SIGKILL, out of memory) loses what was written since
            the last start: this is a stand-in for tests and trials, MinIO stays the production choice.
            /tmp/s3-ready exists once the saved objects are loaded (the healthcheck waits for it).
``buckets`` the one-shot `buckets` job: creates $VISIONOPS_MLFLOW_BUCKET and $VISIONOPS_DVC_BUCKET on
            http://minio:9000 if absent. moto checks no credentials, so there is no user or policy to create.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

DATA = Path(os.environ.get("S3_DATA", "/data"))
READY = Path("/tmp/s3-ready")
PORT = 9000


def client(endpoint: str):
    """A boto3 S3 client of ``endpoint`` (moto accepts any key; these are not credentials)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id="stand-in",
        aws_secret_access_key="stand-in",
    )


def load(s3) -> int:
    """Create the saved buckets and objects (DATA/manifest.json, contents in DATA/blobs/<sha256>); their count."""
    manifest = DATA / "manifest.json"
    if not manifest.exists():
        return 0
    saved = json.loads(manifest.read_text())
    for bucket, objects in saved.items():
        s3.create_bucket(Bucket=bucket)
        for key, digest in objects.items():
            s3.put_object(Bucket=bucket, Key=key, Body=(DATA / "blobs" / digest).read_bytes())
    return sum(len(objects) for objects in saved.values())


def save(s3) -> int:
    """Write every bucket's objects to DATA (content-addressed blobs, then the manifest atomically); their count."""
    blobs = DATA / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    saved: dict[str, dict[str, str]] = {}
    for bucket in (b["Name"] for b in s3.list_buckets()["Buckets"]):
        saved[bucket] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                digest = hashlib.sha256(body).hexdigest()
                if not (blobs / digest).exists():
                    (blobs / f"{digest}.tmp").write_bytes(body)
                    (blobs / f"{digest}.tmp").rename(blobs / digest)
                saved[bucket][item["Key"]] = digest
    (DATA / "manifest.json.tmp").write_text(json.dumps(saved))
    (DATA / "manifest.json.tmp").rename(DATA / "manifest.json")
    used = {digest for objects in saved.values() for digest in objects.values()}
    for blob in blobs.iterdir():
        if blob.name not in used:
            blob.unlink()
    return len(used)


def serve() -> None:
    """Run moto's server until SIGTERM/SIGINT, with the objects of DATA loaded before and saved after."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT, verbose=False)
    server.start()
    s3 = client(f"http://127.0.0.1:{PORT}")
    print(f"s3-moto: loaded {load(s3)} objects from {DATA}", flush=True)
    READY.touch()
    stop.wait()
    READY.unlink()
    print(f"s3-moto: saved {save(s3)} distinct objects to {DATA}", flush=True)
    server.stop()


def buckets() -> None:
    """Create the MLflow and DVC buckets of .env if they do not exist yet."""
    s3 = client(os.environ.get("S3_ENDPOINT", "http://minio:9000"))
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    names = [os.environ["VISIONOPS_MLFLOW_BUCKET"], os.environ["VISIONOPS_DVC_BUCKET"]]
    for name in names:
        if name not in existing:
            s3.create_bucket(Bucket=name)
    print(f"buckets {' and '.join(names)} ready (moto stand-in: any access key is accepted)", flush=True)


if __name__ == "__main__":
    {"serve": serve, "buckets": buckets}[sys.argv[1] if len(sys.argv) > 1 else "serve"]()
