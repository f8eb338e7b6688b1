"""The HTTP routes, one router per concern: ``/api/v1`` (the native API) and ``/v1`` (OpenAI-compatible)."""
from __future__ import annotations

from fastapi import APIRouter

from bastion.server.routes import admin, ask, evaluation, knowledge, monitor, openai, session, sources, tuning

ROUTERS: tuple[APIRouter, ...] = (session.router, knowledge.router, ask.router, sources.router, admin.router,
                                  monitor.router, evaluation.router, tuning.router, openai.router)

__all__ = ["ROUTERS"]
