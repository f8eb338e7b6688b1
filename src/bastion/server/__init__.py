"""The HTTP server: native API, OpenAI-compatible API, web UI (``bastion serve``)."""
from bastion.server.app import create_app, serve

__all__ = ["create_app", "serve"]
