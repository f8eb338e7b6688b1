"""Webhook delivery of alert events through a durable outbox.

An alert event becomes one ``alert_deliveries`` row per webhook that wants it, in the
catalog, before anything is sent; a background thread POSTs the JSON body with a timeout and
retries with exponential backoff. A sync never waits for it; what could not be delivered
stays in the outbox and is retried by the next ``bastion monitor run`` (or the next event).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from typing import Any

import httpx
from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import AlertDeliveryRow, utc_iso, utcnow
from bastion.core.config import WebhookConfig
from bastion.events import log

MAX_ATTEMPTS = 50  # over all runs; then the delivery is given up (it stays in the outbox, visible)


class Notifier:
    def __init__(self, catalog: Catalog, webhooks: list[WebhookConfig], workspace: str = ""):
        self.catalog, self.webhooks, self.workspace = catalog, list(webhooks), workspace
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def enqueue(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Record the events for every webhook that wants them, then deliver in the background."""
        rows = [AlertDeliveryRow(alert_id=alert["id"], event=event, url=hook.url, attempts=0,
                                 payload={"event": event, "workspace": self.workspace, "alert": alert})
                for event, alert in events for hook in self.webhooks if event in hook.events]
        if not rows:
            return
        with self.catalog.session(write=True) as s:
            s.add_all(rows)
        self.deliver_in_background()

    def deliver_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self.deliver_pending, name="bastion-webhooks", daemon=True)
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        return t

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for background deliveries (a CLI process before it exits)."""
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def pending(self) -> list[dict[str, Any]]:
        with self.catalog.session() as s:
            return [{"id": r.id, "alert_id": r.alert_id, "event": r.event, "url": r.url, "attempts": r.attempts,
                     "last_error": r.last_error}
                    for r in s.scalars(select(AlertDeliveryRow).where(AlertDeliveryRow.delivered_at.is_(None)))]

    def deliver_pending(self) -> int:
        """Try every undelivered event once, with its webhook's retries; returns how many were delivered."""
        if not self._lock.acquire(blocking=False):
            return 0  # another thread is delivering; it will pick these up
        try:
            with self.catalog.session() as s:
                todo = [(r.id, r.url, r.payload) for r in s.scalars(
                    select(AlertDeliveryRow).where(AlertDeliveryRow.delivered_at.is_(None),
                                                   AlertDeliveryRow.attempts < MAX_ATTEMPTS).order_by(AlertDeliveryRow.id))]
            hooks = {h.url: h for h in self.webhooks}
            delivered = 0
            for row_id, url, payload in todo:
                hook = hooks.get(url)
                if hook is None:
                    continue  # the webhook was removed from the configuration
                delivered += self._deliver(row_id, hook, payload)
            return delivered
        finally:
            self._lock.release()

    def _deliver(self, row_id: int, hook: WebhookConfig, payload: dict[str, Any]) -> bool:
        body = json.dumps(payload | {"sent_at": utc_iso(utcnow())}, ensure_ascii=False).encode()
        headers = {"content-type": "application/json", "user-agent": "bastion-alerts"}
        secret = os.environ.get(hook.secret_env) if hook.secret_env else None
        if secret:
            headers["x-bastion-signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        error = None
        attempts = 0
        for attempt in range(hook.retries + 1):
            if attempt:
                time.sleep(hook.backoff_s * 2 ** (attempt - 1))
            attempts += 1
            try:
                r = httpx.post(hook.url, content=body, headers=headers, timeout=hook.timeout_s)
                if r.status_code < 300:
                    error = None
                    break
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        with self.catalog.session(write=True) as s:
            row = s.get(AlertDeliveryRow, row_id)
            if row is not None:  # (removed meanwhile: nothing left to record)
                row.attempts += attempts
                row.last_error = error
                if error is None:
                    row.delivered_at = utcnow()
        if error:
            log("webhook.failed", url=hook.url, error=error, attempts=attempts)
        return error is None
