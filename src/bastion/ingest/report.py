"""What one sync did, as the CLI prints it and ``--json`` returns it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SyncReport:
    source: str
    run_id: int | None = None
    status: str = "completed"  # completed | quarantined (nothing published) | failed | interrupted
    documents_added: int = 0
    documents_updated: int = 0
    documents_acl_changed: int = 0
    documents_deleted: int = 0
    documents_unchanged: int = 0
    documents_rechunked: int = 0  # unchanged, but indexed by another chunker: cut again
    documents_failed: int = 0
    chunks_embedded: int = 0
    chunks_written: int = 0
    pages: int = 0
    seconds: float = 0.0
    errors: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # items that are not documents: {"file", "reason"}
    quarantined: list[str] = field(default_factory=list)  # why the run was not published
    alerts: list[dict] = field(default_factory=list)  # alerts this sync opened or still sees

    def error(self, file: str, reason: str) -> None:
        self.documents_failed += 1
        self.errors.append({"file": file, "reason": reason})

    def counts(self) -> dict:
        data = asdict(self)
        for name in ("errors", "skipped", "quarantined", "alerts", "status"):
            data.pop(name)
        return data

    def to_dict(self) -> dict:
        return asdict(self)

    def merge(self, other: SyncReport) -> None:
        for name, value in other.counts().items():
            if isinstance(value, (int, float)) and name != "run_id":
                setattr(self, name, getattr(self, name) + value)
        self.errors.extend(other.errors)
        self.skipped.extend(other.skipped)
        self.quarantined.extend(other.quarantined)
        self.alerts.extend(other.alerts)
