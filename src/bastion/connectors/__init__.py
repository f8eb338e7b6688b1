"""Connectors list the documents of a source; the pipeline decides what to read."""
from bastion.connectors.protocol import Connector, SourceItem

__all__ = ["Connector", "SourceItem"]
