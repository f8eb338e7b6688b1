"""How a CLI command is answered by a running ``bastion serve`` of the same workspace.

A cold ``bastion search`` spends most of its time importing the index engine and opening the
workspace; a server of that workspace has all of it loaded. While it runs, the server keeps
``data/cli-bridge.json`` (mode 0600, removed when it stops): its address and process id, a random
secret, and the digest of the configuration it runs (:func:`config_digest`).

The file is the credential: a CLI that can read it may search as any user of the workspace, as
``--as USER`` does locally, and nobody else can. The secret never travels. A request carries an
HMAC over its time, a fresh nonce and its body (:func:`sign_request`); the server accepts it once,
within :data:`MAX_SKEW_S` of its time (:class:`NonceWindow`). The answer carries an HMAC over that
nonce and the answer's body (:func:`sign_response`), so a process that took the port after the
server exited learns no secret and cannot pass off results of its own.

The module imports nothing heavy: the CLI reads it before deciding whether to open the workspace.

>>> secret = bytes(32)
>>> header = sign_request(secret, b'{"query": "leave"}', now=1000.0, nonce="ab" * 16)
>>> verify_request(secret, header, b'{"query": "leave"}', now=1010.0)
'abababababababababababababababab'
>>> verify_request(secret, header, b'{"query": "salaries"}', now=1010.0)
Traceback (most recent call last):
...
bastion.core.cli_bridge.BridgeAuthError: request signature does not match
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion.core.errors import BastionError

BRIDGE_FILE = "cli-bridge.json"
REQUEST_HEADER = "x-bastion-cli"
PROOF_HEADER = "x-bastion-cli-proof"
MAX_SKEW_S = 30.0
_VERSION = "v1"
_NONCE = re.compile(r"^[0-9a-f]{32}$")


class BridgeAuthError(BastionError):
    """A bridge request or answer whose signature, time or nonce does not check out."""


@dataclass(frozen=True)
class Bridge:
    """What the server advertises: where it listens, who it is, the secret, its configuration's digest."""

    url: str
    pid: int
    secret: bytes
    config: str

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "pid": self.pid, "secret": self.secret.hex(), "config": self.config})


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def config_digest(home: Path, environ: Mapping[str, str] | None = None) -> str:
    """The digest of what the workspace's configuration is read from: ``bastion.toml`` and the
    ``BASTION_<SECTION>__<KEY>`` overrides. The CLI uses the server only when its own digest is
    the same, so both search with the same settings."""
    env = os.environ if environ is None else environ
    digest = hashlib.sha256()
    try:
        digest.update((home / "bastion.toml").read_bytes())
    except OSError:
        digest.update(b"\0missing")
    for name in sorted(n for n in env if n.startswith("BASTION_") and "__" in n):
        digest.update(f"\0{name}={env[name]}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def write_bridge(data_dir: Path, bridge: Bridge) -> Path:
    """Write the bridge file, readable and writable by this user only; atomic (write, then rename)."""
    target = data_dir / BRIDGE_FILE
    tmp = data_dir / f".{BRIDGE_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or a leftover file said
        os.write(fd, bridge.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return target


def remove_bridge(data_dir: Path, bridge: Bridge) -> None:
    """Remove the bridge file if it is still this server's (another server may have replaced it)."""
    found = read_bridge(data_dir)
    if found is not None and hmac.compare_digest(found.secret, bridge.secret):
        (data_dir / BRIDGE_FILE).unlink(missing_ok=True)


def read_bridge(data_dir: Path) -> Bridge | None:
    """The advertised server, or None: no file, not a regular file, readable or writable by group or
    others (then others may know the secret), or not a bridge file."""
    try:
        fd = os.open(data_dir / BRIDGE_FILE, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_size > 4096:
            return None
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        bridge = Bridge(url=str(data["url"]), pid=int(data["pid"]), secret=bytes.fromhex(data["secret"]),
                        config=str(data["config"]))
    except (ValueError, KeyError, TypeError):
        return None
    return bridge if len(bridge.secret) >= 32 and bridge.url.startswith("http://") else None


def process_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negative numbers name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _mac(secret: bytes, *parts: str | bytes) -> str:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part if isinstance(part, bytes) else part.encode())
        mac.update(b"\n")
    return mac.hexdigest()


def sign_request(secret: bytes, body: bytes, *, now: float | None = None, nonce: str | None = None) -> str:
    """The request header: ``v1 <unix time> <nonce> <HMAC(secret, time, nonce, sha256(body))>``."""
    ts = f"{time.time() if now is None else now:.3f}"
    nonce = nonce or secrets.token_hex(16)
    return f"{_VERSION} {ts} {nonce} {_mac(secret, 'request', ts, nonce, hashlib.sha256(body).digest())}"


def verify_request(secret: bytes, header: str | None, body: bytes, *, now: float | None = None) -> str:
    """The request's nonce if ``header`` signs ``body`` with ``secret`` within :data:`MAX_SKEW_S` of
    ``now``; :class:`BridgeAuthError` otherwise. Replays are for :class:`NonceWindow` to refuse."""
    parts = (header or "").split(" ")
    if len(parts) != 4 or parts[0] != _VERSION or not _NONCE.match(parts[2]):
        raise BridgeAuthError("malformed request signature")
    _, ts, nonce, mac = parts
    try:
        sent = float(ts)
    except ValueError:
        raise BridgeAuthError("malformed request signature") from None
    expected = _mac(secret, "request", ts, nonce, hashlib.sha256(body).digest())
    if not hmac.compare_digest(expected, mac):
        raise BridgeAuthError("request signature does not match")
    if not math.isfinite(sent) or abs((time.time() if now is None else now) - sent) > MAX_SKEW_S:
        raise BridgeAuthError("request signature is too old or from the future")
    return nonce


def sign_response(secret: bytes, nonce: str, body: bytes) -> str:
    return _mac(secret, "response", nonce, hashlib.sha256(body).digest())


def verify_response(secret: bytes, nonce: str, body: bytes, proof: str | None) -> bool:
    return proof is not None and hmac.compare_digest(sign_response(secret, nonce, body), proof)


class NonceWindow:
    """The nonces accepted in the last ``2 * MAX_SKEW_S`` seconds: a request is answered once."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._limit = limit

    def first_use(self, nonce: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self._lock:
            if len(self._seen) >= self._limit or next(iter(self._seen.values()), now) < now - 2 * MAX_SKEW_S:
                self._seen = {n: t for n, t in self._seen.items() if t >= now - 2 * MAX_SKEW_S}
            if nonce in self._seen or len(self._seen) >= self._limit:
                return False
            self._seen[nonce] = now
            return True
