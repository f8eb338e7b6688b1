"""The HTTP routes, one router per concern: ``/api/v1`` (the native API) and ``/v1`` (OpenAI-compatible)."""
from __future__ import annotations

from fastapi import APIRouter

from bastion.server.routes import (
    admin,
    ask,
    cli_bridge,
    conversations,
    evaluation,
    knowledge,
    monitor,
    openai,
    originals,
    session,
    sources,
    tuning,
)

ROUTERS: tuple[APIRouter, ...] = (session.router, knowledge.router, originals.router, ask.router,
                                  conversations.router, sources.router, admin.router, monitor.router,
                                  evaluation.router, tuning.router, openai.router, cli_bridge.router)

__all__ = ["ROUTERS"]
