"""The server's side of the CLI bridge (:mod:`bastion.core.cli_bridge`): advertise while listening.

:class:`BridgedServer` is uvicorn's server that, once its sockets listen, writes the workspace's
bridge file (a new random secret, the address, its pid, the configuration's digest) and removes it
when it stops; the route (:mod:`bastion.server.routes.cli_bridge`) answers only while it is
advertised. A server killed with ``kill -9`` leaves the file behind: the CLI checks that the pid
still runs, and a process that took over the port cannot answer with the secret's proof.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import uvicorn

from bastion.core import cli_bridge
from bastion.events import log

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bastion.workspace import Workspace


@dataclass
class ServedBridge:
    """The advertised bridge and the request nonces it has answered."""

    bridge: cli_bridge.Bridge
    nonces: cli_bridge.NonceWindow = field(default_factory=cli_bridge.NonceWindow)


def listening_url(sockets: list[socket.socket]) -> str | None:
    """The URL a local CLI reaches the server at: a loopback address where the server listens on one
    or on every address, else the first address it listens on."""
    names = [s.getsockname() for s in sockets if s.family in (socket.AF_INET, socket.AF_INET6)]
    if not names:
        return None
    loopback = {"0.0.0.0": "127.0.0.1", "::": "::1"}
    candidates = [(loopback.get(n[0], n[0]), n[1]) for n in names]
    host, port = next((c for c in candidates if ipaddress.ip_address(c[0]).is_loopback), candidates[0])
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BridgedServer(uvicorn.Server):
    """uvicorn's server, advertised to the workspace's CLI while it listens."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, ws: Workspace) -> None:
        super().__init__(config)
        self._app, self._ws = app, ws
        self._served: ServedBridge | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._advertise()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._withdraw()
        await super().shutdown(sockets=sockets)

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets=sockets)
        finally:
            self._withdraw()

    def _advertise(self) -> None:
        listening = [s for server in self.servers for s in (server.sockets or [])]
        url = listening_url(listening)
        if url is None:
            return
        bridge = cli_bridge.Bridge(url=url, pid=os.getpid(), secret=cli_bridge.new_secret(),
                                   config=cli_bridge.config_digest(self._ws.home))
        self._served = ServedBridge(bridge)
        self._app.state.cli_bridge = self._served  # answering before a CLI can read the file
        try:
            cli_bridge.write_bridge(self._ws.data_dir, bridge)
        except OSError as exc:  # the CLI then searches in its own process
            log("server.cli_bridge_unavailable", error=str(exc))
            self._served = self._app.state.cli_bridge = None

    def _withdraw(self) -> None:
        served, self._served = self._served, None
        if served is None:
            return
        self._app.state.cli_bridge = None
        try:
            cli_bridge.remove_bridge(self._ws.data_dir, served.bridge)
        except OSError as exc:
            log("server.cli_bridge_not_removed", error=str(exc))
