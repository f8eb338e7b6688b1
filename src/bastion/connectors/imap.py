"""Mail in IMAP mailboxes: each message a document, each readable attachment a document of its own.

A message is keyed by its mailbox and its Message-ID header: ``INBOX;MESSAGE-ID=<a1@example.com>``;
an attachment adds its MIME section: ``INBOX;MESSAGE-ID=<a1@example.com>/;SECTION=2``. A message
without a Message-ID is keyed by the mailbox's UIDVALIDITY and its UID, as in an IMAP URL
(RFC 5092): ``INBOX;UIDVALIDITY=1796304567/;UID=42``. So a mailbox the server renumbers (a new
UIDVALIDITY) keeps its documents, and a message replaced by one with the same Message-ID (a
draft saved again) is an update. A second message with a Message-ID already seen in the same
mailbox is reported as skipped; the first one (lowest UID) is the document.

A message's content never changes on an IMAP server, so its arrival time (INTERNALDATE) and size
tell the sync it is already indexed and it is not downloaded again; a message expunged from the
server is no longer listed and leaves the index at the next sync.

The document text of a message is its Subject, From, To, Cc and Date headers followed by its
plain-text body (its HTML body, as text, when it has no plain one). An attachment is read by
the parser of its type (file suffix, else MIME type); attachments of a type no parser reads
(images, archives) are left out. The listing reads only headers and BODYSTRUCTURE; bodies are
fetched by section when a document is new, with ``BODY.PEEK`` so no message is marked read.

Every document's ACL is ``user:<owner>`` (the Bastion user who owns the mailbox) plus the
source's ACL (for a mailbox others share; a shared mailbox may have no owner). The password is
never stored: it is read at sync time from the environment variable named by ``password_env``
or the file named by ``password_file``. A failed login, an unreachable server or a named
mailbox that does not exist fails the whole sync with a clear error, and nothing indexed is
removed.

The original of a message is the whole message as an ``.eml`` file (RFC 822), and of an
attachment the attachment, decoded, under its file name; both are fetched with ``BODY.PEEK``
when asked for, so reading one marks nothing read.
"""
from __future__ import annotations

import fnmatch
import mimetypes
import re
import ssl
import weakref
from collections.abc import Iterator
from datetime import date, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.connectors import _mime
from bastion.connectors._imap_session import ImapSession, Mailbox, password_from
from bastion.connectors._options import checked, comma_list
from bastion.connectors.protocol import Original, SourceItem
from bastion.core.errors import AccessError, ConfigError, IngestError, ParseError
from bastion.core.types import parse_principal
from bastion.parsing import parse

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_HEADERS = ("Subject", "From", "To", "Cc", "Date")
_HEADER_FETCH = "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM TO CC DATE MESSAGE-ID)]"
_SECTION_KEY = re.compile(r"^(?P<message>.+)/;SECTION=(?P<section>[0-9]+(?:\.[0-9]+)*)$")
_UID_KEY = re.compile(r"^(?P<box>.+);UIDVALIDITY=(?P<validity>[0-9]+)/;UID=(?P<uid>[0-9]+)$")


class ImapOptions(BaseModel):
    """The options of an ``imap`` source (``bastion source add NAME --kind imap -o host=...``)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # default: 993 for tls, 143 otherwise
    security: Literal["tls", "starttls", "plain"] = "tls"
    ca_file: str | None = None  # a PEM file of the CA that signed the server's certificate
    username: str = Field(min_length=1)
    password_env: str | None = Field(default=None, min_length=1)
    password_file: str | None = Field(default=None, min_length=1)
    owner: str | None = None  # the Bastion user who owns the mailbox
    mailboxes: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)  # names or globs
    since: date | None = None
    max_messages: int = Field(default=10_000, ge=1)  # per mailbox, the newest
    max_mb: float = Field(default=25, gt=0)
    attachments: bool = True
    timeout: float = Field(default=60, gt=0, le=3600)  # seconds per server reply

    _split = field_validator("mailboxes", mode="before")(comma_list)


class ImapConnector:
    """List the messages (and their attachments) of one IMAP account.

    >>> conn = ImapConnector(host="127.0.0.1", port=1143, security="plain", username="alice@example.com",
    ...                      password_env="ALICE_IMAP_PASSWORD", owner="alice", default_acl=frozenset())
    >>> sorted(conn.acl), conn.mailboxes
    (['user:alice'], ['INBOX'])
    """

    def __init__(self, *, default_acl: frozenset[str], **options: Any):
        try:
            import imapclient  # noqa: F401  (checked here, so a missing extra fails when the source is added)
        except ImportError as exc:
            raise ConfigError("IMAP sources need the imap extra: pip install 'bastion[imap]'") from exc
        if "password" in options:
            raise ConfigError("an IMAP source never stores a password: give password_env=NAME_OF_A_VARIABLE "
                              "or password_file=/path/to/a/file that holds it")
        o = checked(ImapOptions, "imap", options)
        if o.security == "plain" and o.host not in _LOOPBACK:
            raise ConfigError(f"imap source: security=plain sends the password unencrypted; it is allowed only to this "
                              f"machine (localhost), not to {o.host!r}: use security=tls or security=starttls")
        if o.ca_file is not None and not Path(o.ca_file).is_file():
            raise ConfigError(f"imap source: ca_file {o.ca_file!r} is not a file")
        if (o.password_env is None) == (o.password_file is None):
            raise ConfigError("an imap source needs exactly one of password_env=VARIABLE or password_file=PATH")
        owners: frozenset[str] = frozenset()
        if o.owner is not None:
            try:
                owners = frozenset({parse_principal(o.owner if o.owner.startswith("user:") else f"user:{o.owner}")})
            except AccessError as exc:
                raise ConfigError(f"imap source: owner {o.owner!r} is not a Bastion user name ({exc})") from exc
        if not owners and not default_acl:
            raise ConfigError("nobody could read this mailbox: give owner=BASTION_USER (who owns it) and/or --acl "
                              "(who shares it, e.g. 'group:support')")
        self.options = o
        self.host, self.security, self.ca_file, self.username = o.host, o.security, o.ca_file, o.username
        self.port = o.port or (993 if o.security == "tls" else 143)
        self.password_env, self.password_file = o.password_env, o.password_file
        self.mailboxes, self.since, self.max_messages = o.mailboxes, o.since, o.max_messages
        self.max_bytes, self.attachments, self.timeout = int(o.max_mb * 2**20), o.attachments, o.timeout
        self.acl = owners | default_acl
        self._session: ImapSession | None = None

    # -- listing -------------------------------------------------------------------------
    def _open(self) -> ImapSession:
        if self._session is None:
            context = None
            if self.security != "plain":
                context = ssl.create_default_context(cafile=self.ca_file)
            password = password_from(self.password_env, self.password_file)
            self._session = ImapSession(self.host, self.port, self.security, context, self.username, password, self.timeout)
            weakref.finalize(self, self._session.close)
        return self._session

    def _selected_mailboxes(self, session: ImapSession) -> list[str]:
        names = session.mailbox_names()
        chosen: list[str] = []
        for pattern in self.mailboxes:
            if any(c in pattern for c in "*?["):
                chosen += [n for n in names if fnmatch.fnmatchcase(n, pattern) and n not in chosen]
            elif pattern in names or pattern.upper() == "INBOX":  # INBOX is named in any case (RFC 3501)
                name = "INBOX" if pattern.upper() == "INBOX" else pattern
                chosen += [] if name in chosen else [name]
            else:  # failing the sync keeps what was indexed from it; an empty listing would delete it all
                raise IngestError(f"IMAP mailbox {pattern!r} does not exist for {self.username!r} on "
                                  f"{self.host}:{self.port}; it has {sorted(names)}")
        return chosen

    def scan(self) -> Iterator[SourceItem]:
        session = self._open()
        for name in self._selected_mailboxes(session):
            box = session.select(name)
            uids = session.uids(self.since)[-self.max_messages:]  # the newest ones
            first: dict[str, int] = {}  # Message-ID -> the UID that is its document
            for uid, data in session.fetch(uids, ["INTERNALDATE", "RFC822.SIZE", "BODYSTRUCTURE", _HEADER_FETCH]).items():
                header_raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
                headers = BytesHeaderParser(policy=default_policy).parsebytes(header_raw)
                message_id = " ".join(str(headers.get("Message-ID", "")).split())
                uid_key = f"{box.name};UIDVALIDITY={box.uidvalidity}/;UID={uid}"
                if message_id and message_id in first:
                    yield SourceItem(key=uid_key, uri=self._uri(box, uid), media_type="txt", acl=frozenset(),
                                     load=_never, skipped=f"duplicate Message-ID {message_id}: UID {first[message_id]} "
                                                          "in the same mailbox has it and alone is indexed")
                    continue
                if message_id:
                    first[message_id] = uid
                key = f"{box.name};MESSAGE-ID={message_id}" if message_id else uid_key
                yield from self._items(box, uid, key, headers, data)

    def _uri(self, box: Mailbox, uid: int) -> str:
        return (f"imap://{quote(self.username, safe='')}@{self.host}:{self.port}/{quote(box.name, safe='')}"
                f";UIDVALIDITY={box.uidvalidity}/;UID={uid}")

    def _items(self, box: Mailbox, uid: int, key: str, headers: Any, data: dict[bytes, Any]) -> Iterator[SourceItem]:
        uri = self._uri(box, uid)
        fields = {h: str(headers.get(h, "")).strip() for h in _HEADERS}
        arrived = data.get(b"INTERNALDATE")
        mtime = arrived.timestamp() if isinstance(arrived, datetime) else None
        size = int(data.get(b"RFC822.SIZE") or 0)
        try:
            body, attachments = _mime.split_parts(data.get(b"BODYSTRUCTURE"))
        except Exception as exc:  # noqa: BLE001 - a structure the server describes oddly fails this message, not the sync
            body, attachments = [], []
            error: str | None = f"unreadable MIME structure ({type(exc).__name__}: {exc})"
        else:
            error = None
        body_size = sum(p.size for p in body)
        if error is None and body_size > self.max_bytes:
            error = f"message text is {body_size / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:g} MiB limit (max_mb)"
        meta = {"mailbox": box.name, "uid": uid, "message_id": str(headers.get("Message-ID", "")).strip(),
                **{h.lower(): v for h, v in fields.items() if v}}
        yield SourceItem(key=key, uri=uri, media_type="txt", acl=self.acl, mtime=mtime, size=size,
                         title=fields["Subject"] or "(no subject)", error=error, metadata=meta,
                         load=lambda: self._message_text(box, uid, fields, body))
        if not self.attachments:
            return
        for part in attachments:
            media = part.media_type
            if media is None:
                continue  # no parser reads it (an image, an archive): not a document
            too_big = part.size > self.max_bytes
            yield SourceItem(
                key=f"{key}/;SECTION={part.section}", uri=f"{uri}/;SECTION={part.section}", media_type=media,
                acl=self.acl, mtime=mtime, size=part.size, title=part.filename or f"{fields['Subject']} (part {part.section})",
                error=f"attachment is {part.size / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:g} MiB limit (max_mb)"
                if too_big else None,
                metadata={**meta, "attachment": part.filename or "", "section": part.section},
                load=partial(self._attachment, box, uid, part))

    # -- reading -------------------------------------------------------------------------
    def _fetch(self, box: Mailbox, uid: int, sections: list[str]) -> dict[str, bytes]:
        try:
            return self._open().fetch_sections(box, uid, sections)
        except IngestError as exc:  # the connection could not be opened again: this document fails, not the run
            raise OSError(str(exc)) from exc

    def _message_text(self, box: Mailbox, uid: int, fields: dict[str, str], body: list[_mime.Part]) -> bytes:
        lines = [f"{h}: {v}" for h, v in fields.items() if v]
        texts: list[str] = []
        if body:
            fetched = self._fetch(box, uid, [p.section for p in body])
            for part in body:
                try:
                    text = _mime.as_text(_mime.decode(fetched[part.section], part.encoding), part.charset)
                except ValueError as exc:
                    raise OSError(f"message body part {part.section}: {exc}") from exc
                if part.mime == "text/html":
                    text = _html_text(text)
                texts.append(text.strip())
        return ("\n".join(lines) + "\n\n" + "\n\n".join(t for t in texts if t)).encode("utf-8")

    def _attachment(self, box: Mailbox, uid: int, part: _mime.Part) -> bytes:
        raw = self._fetch(box, uid, [part.section])[part.section]
        try:
            return _mime.decode(raw, part.encoding)
        except ValueError as exc:
            raise OSError(f"attachment {part.filename or part.section!r}: {exc}") from exc

    # -- originals -----------------------------------------------------------------------
    def original(self, key: str) -> Original | None:
        """The message ``key`` as an ``.eml``, or the attachment ``key`` decoded (None if the
        mailbox no longer holds it)."""
        match = _SECTION_KEY.match(key)
        message_key, section = (match["message"], match["section"]) if match else (key, None)
        try:
            found = self._locate(message_key)
            if found is None:
                return None
            box, uid, size, structure, subject = found
        except IngestError as exc:  # the server cannot be reached or refuses us: not a missing message
            raise OSError(str(exc)) from exc
        if section is None:
            name = f"{' '.join(subject.replace('/', '-').replace(chr(92), '-').split())[:80] or 'message'}.eml"
            return Original(name=name, media_type="message/rfc822", size=size,
                            open=lambda: self._fetch(box, uid, [""])[""])
        try:
            _, parts = _mime.split_parts(structure)
        except Exception as exc:  # a structure the server describes oddly: say so, no traceback
            raise OSError(f"the MIME structure of message {uid} in {box.name!r} is unreadable ({exc})") from exc
        part = next((p for p in parts if p.section == section), None)
        if part is None:
            return None
        name = part.filename or f"part-{section}"
        media = part.mime or mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Original(name=name, media_type=media, size=part.size, open=partial(self._attachment, box, uid, part))

    def _locate(self, message_key: str) -> tuple[Mailbox, int, int, Any, str] | None:
        """(mailbox, UID, size, BODYSTRUCTURE, subject) of the message a key names, None if it is gone."""
        session = self._open()
        by_uid = _UID_KEY.match(message_key)
        if by_uid:
            box = session.select(by_uid["box"])
            if box.uidvalidity != int(by_uid["validity"]):
                return None  # renumbered: the UID names another message now
            uids = [int(by_uid["uid"])]
            message_id = None
        else:
            name, sep, message_id = message_key.partition(";MESSAGE-ID=")
            if not sep or not message_id:
                return None
            box = session.select(name)
            uids = session.search(["HEADER", "Message-ID", message_id])
        if not uids:
            return None
        fetched = session.fetch(uids, ["RFC822.SIZE", "BODYSTRUCTURE", "BODY.PEEK[HEADER.FIELDS (SUBJECT MESSAGE-ID)]"])
        for uid, data in fetched.items():  # the lowest UID with exactly this Message-ID, as the listing chose
            raw = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""
            headers = BytesHeaderParser(policy=default_policy).parsebytes(raw)
            if message_id is None or " ".join(str(headers.get("Message-ID", "")).split()) == message_id:
                return box, uid, int(data.get(b"RFC822.SIZE") or 0), data.get(b"BODYSTRUCTURE"), \
                    str(headers.get("Subject", ""))
        return None


def _html_text(html: str) -> str:
    """The readable text of an HTML body, through Bastion's HTML parser."""
    try:
        parsed = parse(html.encode("utf-8"), "html")
    except ParseError:
        return ""
    return "\n".join(s.text for s in parsed.sections)


def _never() -> bytes:
    raise OSError("a skipped message is never read")
