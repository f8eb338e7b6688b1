"""One logged-in IMAP connection (imapclient), its errors turned into Bastion's.

While listing, a failure of the server is an :class:`IngestError` (the sync fails and removes
nothing); while reading one document it is an ``OSError`` (that document is reported, the
run goes on). A connection lost while reading is opened again once before giving up.
"""
from __future__ import annotations

import contextlib
import imaplib
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bastion.core.errors import IngestError

_BATCH = 500  # UIDs per FETCH command
_NOT_SELECTABLE = {b"\\noselect", b"\\nonexistent"}


@dataclass(frozen=True)
class Mailbox:
    name: str
    uidvalidity: int


def password_from(env: str | None, file: str | None) -> str:
    """The password, from the environment variable or the file the source names."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise IngestError(f"the IMAP password variable {env!r} (password_env) is not set in this process's "
                              "environment; set it where `bastion sync` or `bastion serve` runs")
        return value
    assert file is not None  # the connector checked that one of them is given
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"cannot read the IMAP password file {file!r} (password_file): {exc}") from exc
    if not lines or not lines[0]:
        raise IngestError(f"the IMAP password file {file!r} (password_file) is empty; put the password on its first line")
    return lines[0]


class ImapSession:
    """A connection to ``host:port``, logged in as ``username``, with one mailbox selected at a time."""

    def __init__(self, host: str, port: int, security: str, context: ssl.SSLContext | None, username: str,
                 password: str, timeout: float):
        self.host, self.port, self.security, self.context = host, port, security, context
        self.username, self._password, self.timeout = username, password, timeout
        self._client: Any = None
        self._selected: Mailbox | None = None
        self._connect()

    @property
    def where(self) -> str:
        return f"IMAP server {self.host}:{self.port}"

    def _connect(self) -> None:
        from imapclient import IMAPClient
        from imapclient.exceptions import LoginError

        try:
            client = IMAPClient(self.host, self.port, ssl=self.security == "tls", ssl_context=self.context,
                                timeout=self.timeout)
        except ssl.SSLError as exc:
            raise IngestError(f"TLS with the {self.where} failed: {exc.__class__.__name__}: {exc}; if the server's "
                              "certificate is signed by your own CA, give its PEM file as ca_file") from exc
        except (OSError, imaplib.IMAP4.error) as exc:
            raise IngestError(f"cannot connect to the {self.where}: {exc.__class__.__name__}: {exc}") from exc
        client.normalise_times = False  # INTERNALDATE with its time zone, so timestamps are exact
        try:
            if self.security == "starttls":
                try:
                    client.starttls(self.context)
                except ssl.SSLError as exc:
                    raise IngestError(f"TLS with the {self.where} failed: {exc.__class__.__name__}: {exc}; if the "
                                      "server's certificate is signed by your own CA, give its PEM file as ca_file") from exc
                except (OSError, imaplib.IMAP4.error) as exc:
                    raise IngestError(f"the {self.where} refused STARTTLS ({exc}); use security=tls for a server "
                                      "that speaks TLS from the start (port 993)") from exc
            try:
                client.login(self.username, self._password)
            except LoginError as exc:
                raise IngestError(f"IMAP login as {self.username!r} to {self.host}:{self.port} failed: "
                                  f"{_reason(exc)}; check username and the password (password_env / password_file)") from exc
        except BaseException:
            with contextlib.suppress(Exception):  # the connection is useless either way
                client.shutdown()
            raise
        self._client = client
        self._selected = None

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a connection that may already be gone
                self._client.logout()
            self._client = None

    # -- listing (errors fail the sync) --------------------------------------------------
    def _listing(self, what: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise IngestError(f"{what} on the {self.where} failed: {exc.__class__.__name__}: {_reason(exc)}") from exc

    def mailbox_names(self) -> list[str]:
        folders = self._listing("listing the mailboxes", self._client.list_folders)
        return [name for flags, _, name in folders
                if not {f.lower() for f in flags if isinstance(f, bytes)} & _NOT_SELECTABLE]

    def select(self, name: str) -> Mailbox:
        info = self._listing(f"opening mailbox {name!r}", self._client.select_folder, name, True)
        self._selected = Mailbox(name, int(info[b"UIDVALIDITY"]))
        return self._selected

    def uids(self, since: date | None) -> list[int]:
        criteria = ["SINCE", since] if since else ["ALL"]
        return sorted(self._listing("searching the mailbox", self._client.search, criteria))

    def search(self, criteria: list[Any]) -> list[int]:
        """The UIDs of the selected mailbox's messages that match ``criteria`` (IMAP SEARCH keys)."""
        return sorted(self._listing("searching the mailbox", self._client.search, criteria))

    def fetch(self, uids: Sequence[int], items: list[str]) -> dict[int, dict[bytes, Any]]:
        out: dict[int, dict[bytes, Any]] = {}
        for i in range(0, len(uids), _BATCH):
            out.update(self._listing("listing messages", self._client.fetch, list(uids[i:i + _BATCH]), items))
        return dict(sorted(out.items()))

    # -- reading (errors fail one document) ----------------------------------------------
    def fetch_sections(self, box: Mailbox, uid: int, sections: list[str]) -> dict[str, bytes]:
        """The raw (still transfer-encoded) bytes of the given MIME sections of one message."""
        for attempt in (1, 2):
            try:
                return self._fetch_sections(box, uid, sections)
            except (TimeoutError, imaplib.IMAP4.abort, ConnectionError) as exc:
                if attempt == 2:
                    raise OSError(f"lost the connection to the {self.where}: {exc}") from exc
                self.close()
                try:
                    self._connect()
                except IngestError as again:
                    raise OSError(str(again)) from again
            except (OSError, imaplib.IMAP4.error) as exc:
                raise OSError(f"fetching message {uid} from {box.name!r} failed: {_reason(exc)}") from exc
        raise AssertionError("unreachable")

    def _fetch_sections(self, box: Mailbox, uid: int, sections: list[str]) -> dict[str, bytes]:
        if self._selected != box:
            info = self._client.select_folder(box.name, readonly=True)
            self._selected = Mailbox(box.name, int(info[b"UIDVALIDITY"]))
            if self._selected != box:
                raise OSError(f"mailbox {box.name!r} was renumbered (new UIDVALIDITY) since it was listed; "
                              "the next sync indexes it afresh")
        data = self._client.fetch([uid], [f"BODY.PEEK[{s}]" for s in sections]).get(uid)
        if data is None:
            raise OSError(f"message {uid} is no longer in {box.name!r}; the next sync removes it")
        return {s: data.get(f"BODY[{s}]".encode()) or b"" for s in sections}


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):  # imaplib quotes the server's bytes
        text = text[2:-1]
    return text
