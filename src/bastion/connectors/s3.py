"""Objects in a bucket of any S3-compatible store (AWS S3, MinIO, Ceph RGW, ...), one document each.

Objects under ``prefix`` whose names a parser reads (``.pdf``, ``.md``, ...) are listed, filtered
by ``include``/``exclude`` globs over the name below the prefix; "folder" markers (names ending
in ``/``) are not documents. A document's key is the object's name. An object is downloaded
only when its ETag, LastModified or size differs from what was indexed, and the download asks
for that very ETag (``If-Match``), so an object rewritten since the listing is read at the next
sync instead of half-matched. Objects removed from the bucket leave the index at the next sync.

The ACL of an object, most specific first:

1. its metadata ``x-amz-meta-bastion-acl`` (``acl_metadata=true``; one HEAD request per
   object per sync), principals separated by commas;
2. the longest matching prefix in ``prefix_acls`` (``{"finance/": "group:finance"}``);
3. the source's ``--acl``.

A value that cannot be used (not a list of principals) withdraws that object with a reported
error: it fails closed, never open. Credentials are never stored: ``access_key_env`` and
``secret_key_env`` name environment variables that hold them, or ``profile`` names a profile
of the AWS configuration files; with neither, boto3's own chain applies (``AWS_*`` variables,
an instance role). A bucket that cannot be listed (wrong credentials, no such bucket,
unreachable endpoint) fails the whole sync with a clear error, and nothing indexed is removed.

The original of a document is the object as the bucket holds it now: one HEAD request gives its
size, type and ETag, and the download asks for that ETag, so what is served is one version whole.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.connectors._options import checked, comma_list
from bastion.connectors.filesystem import _matches
from bastion.connectors.protocol import Original, SourceItem
from bastion.core.errors import AccessError, ConfigError, IngestError
from bastion.core.types import parse_acl
from bastion.parsing import SUPPORTED

ACL_METADATA = "bastion-acl"  # user metadata: the header x-amz-meta-bastion-acl
_SECRET_OPTIONS = {"access_key", "secret_key", "aws_access_key_id", "aws_secret_access_key", "session_token",
                   "aws_session_token", "password"}
_HEAD_WORKERS = 8


def _version_time(last_modified: Any, etag: str) -> float | None:
    """LastModified as a timestamp, with the ETag folded in below the millisecond: S3 keeps
    LastModified to the second, so an object rewritten within one second at the same size
    still reads as changed."""
    if last_modified is None:
        return None
    fold = int(hashlib.sha256(etag.encode()).hexdigest()[:6], 16) / 16**6 / 1000
    return float(int(last_modified.timestamp())) + fold


class S3Options(BaseModel):
    """The options of an ``s3`` source (``bastion source add NAME --kind s3 -o bucket=...``)."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=1, pattern=r"^[^/]+$")  # a folder goes in prefix
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")  # default: AWS
    region: str | None = None
    prefix: str = ""
    profile: str | None = None  # a profile of the AWS configuration files
    access_key_env: str | None = None  # variables that hold the credentials
    secret_key_env: str | None = None
    session_token_env: str | None = None
    include: list[str] = Field(default_factory=list)  # globs over the name below the prefix
    exclude: list[str] = Field(default_factory=list)
    prefix_acls: dict[str, str] = Field(default_factory=dict)  # name prefix -> ACL
    acl_metadata: bool = False  # read x-amz-meta-bastion-acl
    max_mb: float = Field(default=50, gt=0)
    ca_file: str | None = None
    path_style: bool = False
    timeout: float = Field(default=60, gt=0, le=3600)  # seconds per request

    _split = field_validator("include", "exclude", mode="before")(comma_list)


class S3Connector:
    """List the objects of ``bucket`` under ``prefix``.

    >>> conn = S3Connector(bucket="reports", endpoint_url="http://127.0.0.1:9000", prefix="finance/",
    ...                    prefix_acls={"finance/board/": "group:board"}, default_acl=frozenset({"group:finance"}))
    >>> sorted(conn.acl_for("finance/board/minutes.pdf")), sorted(conn.acl_for("finance/q3.pdf"))
    (['group:board'], ['group:finance'])
    """

    def __init__(self, *, default_acl: frozenset[str], **options: Any):
        try:
            import boto3  # noqa: F401  (checked here, so a missing extra fails when the source is added)
        except ImportError as exc:
            raise ConfigError("S3 sources need the s3 extra: pip install 'bastion[s3]'") from exc
        if _SECRET_OPTIONS & set(options):
            raise ConfigError("an S3 source never stores credentials: give access_key_env=VARIABLE and "
                              "secret_key_env=VARIABLE (variables that hold them), or profile=NAME")
        o = checked(S3Options, "s3", options)
        if (o.access_key_env is None) != (o.secret_key_env is None):
            raise ConfigError("s3 source: give both access_key_env and secret_key_env (or neither, to use profile "
                              "or the AWS_* variables)")
        if o.profile is not None and o.access_key_env is not None:
            raise ConfigError("s3 source: give either profile or access_key_env/secret_key_env, not both")
        if o.session_token_env is not None and o.access_key_env is None:
            raise ConfigError("s3 source: session_token_env goes with access_key_env and secret_key_env")
        if o.ca_file is not None and not os.path.isfile(o.ca_file):
            raise ConfigError(f"s3 source: ca_file {o.ca_file!r} is not a file")
        self.options = o
        self.prefix_acls = self._prefix_acls(o.prefix_acls)
        self.bucket, self.endpoint_url, self.region, self.prefix = o.bucket, o.endpoint_url, o.region, o.prefix
        self.profile, self.ca_file, self.path_style, self.timeout = o.profile, o.ca_file, o.path_style, o.timeout
        self.key_envs = (o.access_key_env, o.secret_key_env, o.session_token_env)
        self.include, self.exclude = o.include, o.exclude
        self.acl_metadata, self.max_bytes = o.acl_metadata, int(o.max_mb * 2**20)
        self.default_acl = default_acl
        self._client: Any = None

    @staticmethod
    def _prefix_acls(value: dict[str, str]) -> list[tuple[str, frozenset[str]]]:
        out = []
        for prefix, acl in value.items():
            try:
                out.append((prefix, parse_acl(acl)))
            except AccessError as exc:
                raise ConfigError(f"s3 source: prefix_acls[{prefix!r}]: {exc}") from exc
        return sorted(out, key=lambda p: len(p[0]), reverse=True)  # the longest prefix first

    def acl_for(self, key: str) -> frozenset[str]:
        """The ACL an object gets from ``prefix_acls`` or, when none matches, the source."""
        return next((acl for prefix, acl in self.prefix_acls if key.startswith(prefix)), self.default_acl)

    # -- the S3 client ---------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"S3 bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def client(self) -> Any:
        if self._client is None:
            self._client = _make_client(self)
        return self._client

    # -- listing -----------------------------------------------------------------------------
    def scan(self) -> Iterator[SourceItem]:
        from botocore.exceptions import BotoCoreError, ClientError

        objects = []
        try:
            for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                objects += [o for o in page.get("Contents", []) if self._wanted(o["Key"])]
        except ClientError as exc:
            raise IngestError(f"{self.where} cannot be listed: {_client_error(exc)}") from exc
        except BotoCoreError as exc:
            raise IngestError(f"{self.where} cannot be listed: {exc}") from exc
        for obj in objects:
            if _suffix(obj["Key"]) not in SUPPORTED:
                yield SourceItem(key=obj["Key"], uri=f"s3://{self.bucket}/{obj['Key']}", media_type="", acl=frozenset(),
                                 load=_never, skipped=f"unsupported file type {_suffix(obj['Key']) or '(no suffix)'!r}")
        objects = [o for o in objects if _suffix(o["Key"]) in SUPPORTED]
        metadata_acls: list[frozenset[str] | str | None] = [None] * len(objects)
        if self.acl_metadata:
            with ThreadPoolExecutor(_HEAD_WORKERS) as pool:
                metadata_acls = list(pool.map(self._metadata_acl, [o["Key"] for o in objects]))
        for obj, meta_acl in zip(objects, metadata_acls):
            yield self._item(obj, meta_acl)

    def _wanted(self, key: str) -> bool:
        if key.endswith("/"):
            return False  # a "folder" marker
        rel = key[len(self.prefix):].lstrip("/")
        if self.include and not _matches(rel, self.include):
            return False
        if self.exclude and _matches(rel, self.exclude):
            return False
        # a type no parser reads is left out, unless an include pattern names it: then it is reported
        return bool(self.include) or _suffix(key) in SUPPORTED

    def _metadata_acl(self, key: str) -> frozenset[str] | str | None:
        """The object's own ACL from its metadata, None when it has none, or why it cannot be used."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            return f"cannot read its metadata for the ACL ({_client_error(exc)}); withdrawn until it can"
        except BotoCoreError as exc:
            return f"cannot read its metadata for the ACL ({exc}); withdrawn until it can"
        value = head.get("Metadata", {}).get(ACL_METADATA)
        if value is None:
            return None
        try:
            acl = parse_acl(value)
        except AccessError as exc:
            return f"invalid x-amz-meta-{ACL_METADATA} {value!r}: {exc}; the object is withdrawn"
        if not acl:
            return f"x-amz-meta-{ACL_METADATA} names nobody; the object is withdrawn"
        return acl

    def _item(self, obj: dict[str, Any], meta_acl: frozenset[str] | str | None) -> SourceItem:
        key, size = obj["Key"], int(obj.get("Size") or 0)
        etag = str(obj.get("ETag") or "")
        error = meta_acl if isinstance(meta_acl, str) else None
        acl = meta_acl if isinstance(meta_acl, frozenset) else frozenset() if error else self.acl_for(key)
        if error is None and size > self.max_bytes:
            error = f"object is {size / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:g} MiB limit (max_mb)"
        return SourceItem(key=key, uri=f"s3://{self.bucket}/{key}", media_type=_suffix(key), acl=acl, load=partial(self._read, key, etag),
                          mtime=_version_time(obj.get("LastModified"), etag), size=size, title=PurePosixPath(key).stem,
                          error=error, metadata={"etag": etag})

    def _read(self, key: str, etag: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client().get_object(Bucket=self.bucket, Key=key, IfMatch=etag)
            data: bytes = response["Body"].read(self.max_bytes + 1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise OSError("the object was rewritten since it was listed; it is read at the next sync") from exc
            raise OSError(_client_error(exc)) from exc
        except BotoCoreError as exc:
            raise OSError(str(exc)) from exc
        if len(data) > self.max_bytes:
            raise OSError(f"object is larger than the {self.max_bytes / 2**20:g} MiB limit (max_mb)")
        return data

    # -- originals -------------------------------------------------------------------------
    def original(self, key: str) -> Original | None:
        """The object ``key`` now (None if the bucket no longer has it); ``mtime`` tells whether
        it changed since the sync (see :class:`~bastion.connectors.protocol.Original`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client().head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise OSError(f"{self.where}: {_client_error(exc)}") from exc
        except BotoCoreError as exc:
            raise OSError(f"{self.where} cannot be reached: {exc}") from exc
        etag = str(head.get("ETag") or "")

        def open_body() -> Any:
            try:
                return self.client().get_object(Bucket=self.bucket, Key=key, IfMatch=etag)["Body"]
            except ClientError as exc:
                raise OSError(f"{self.where}: {_client_error(exc)}") from exc
            except BotoCoreError as exc:
                raise OSError(f"{self.where} cannot be reached: {exc}") from exc

        media = str(head.get("ContentType") or "").split(";")[0].strip().lower()
        if media in ("", "binary/octet-stream", "application/octet-stream"):  # what a plain upload gets
            media = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return Original(name=PurePosixPath(key).name, media_type=media, size=int(head.get("ContentLength") or 0),
                        open=open_body, mtime=_version_time(head.get("LastModified"), etag))


def _make_client(conn: S3Connector) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    key_env, secret_env, token_env = conn.key_envs
    credentials: dict[str, str] = {}
    if key_env and secret_env:
        for option, env in (("aws_access_key_id", key_env), ("aws_secret_access_key", secret_env),
                            ("aws_session_token", token_env)):
            if env is None:
                continue
            value = os.environ.get(env)
            if value is None:
                raise IngestError(f"the S3 credential variable {env!r} is not set in this process's environment; "
                                  "set it where `bastion sync` or `bastion serve` runs")
            credentials[option] = value
    try:
        session = boto3.Session(profile_name=conn.profile) if conn.profile else boto3.Session()
        return session.client(
            "s3", endpoint_url=conn.endpoint_url, region_name=conn.region, verify=conn.ca_file or True,
            config=Config(connect_timeout=min(conn.timeout, 10), read_timeout=conn.timeout,
                          retries={"max_attempts": 3, "mode": "standard"},
                          s3={"addressing_style": "path" if conn.path_style else "auto"}),
            **credentials)
    except BotoCoreError as exc:  # e.g. an unknown profile
        raise IngestError(f"cannot set up the S3 client for {conn.where}: {exc}") from exc


def _client_error(exc: Any) -> str:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "error"), error.get("Message", str(exc))
    hint = ""
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "AccessDenied", "403"):
        hint = "; check the credentials (access_key_env / secret_key_env / profile) and the bucket's policy"
    elif code in ("NoSuchBucket", "404"):
        hint = "; check the bucket's name, region and endpoint_url"
    return f"{code}: {message}{hint}"


def _suffix(key: str) -> str:
    return PurePosixPath(key).suffix.lower().lstrip(".")


def _never() -> bytes:
    raise OSError("a skipped object is never read")
