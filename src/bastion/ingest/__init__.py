"""The sync pipeline: diff against the catalog, parse, chunk, embed, write, commit."""
from bastion.ingest.pipeline import SyncPipeline
from bastion.ingest.report import SyncReport

__all__ = ["SyncPipeline", "SyncReport"]
