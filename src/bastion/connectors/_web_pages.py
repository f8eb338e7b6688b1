"""What the web connector reads from a response: canonical URLs, links, sitemaps, media types,
and the per-page record it keeps between crawls (validators, links, the stored body)."""
from __future__ import annotations

import email.utils
import hashlib
import json
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

from bastion.connectors._options import write_json_atomically
from bastion.events import log

# Content-Type -> the media type the parsers take (bastion.parsing)
MEDIA_TYPES = {
    "text/html": "html", "application/xhtml+xml": "html", "application/pdf": "pdf", "text/plain": "txt",
    "text/markdown": "md", "text/x-markdown": "md", "text/csv": "csv", "text/tab-separated-values": "tsv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
_BY_SUFFIX = {"pdf", "docx", "xlsx", "csv", "tsv", "md", "txt", "html", "htm"}
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL without fragment, default port or dot segments; None if it is not one.

    >>> normalize("../b/./c.html#top", "HTTP://Example.org:80/a/x/")
    'http://example.org/a/b/c.html'
    >>> normalize("mailto:someone@example.org") is None
    True
    """
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme.lower()]:
        host = f"{host}:{port}"
    path = parts.path or "/"
    clean = posixpath.normpath(path)
    if path.endswith("/") and clean != "/":
        clean += "/"
    clean = "/" + clean.lstrip("/")
    return urlunsplit((parts.scheme.lower(), host, clean, parts.query, ""))


def media_type(content_type: str | None, url: str) -> str | None:
    """The parser media type of a response, from its Content-Type, else from a generic type and the
    URL's suffix; None: not a document the parsers read."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in MEDIA_TYPES:
        return MEDIA_TYPES[mime]
    if mime in ("", "application/octet-stream", "binary/octet-stream"):
        suffix = posixpath.splitext(urlsplit(url).path)[1].lower().lstrip(".")
        return suffix if suffix in _BY_SUFFIX else None
    return None


def http_time(value: str | None) -> float | None:
    """A Last-Modified header as a Unix time; None when absent or unreadable."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass
class HtmlFacts:
    links: list[str]
    canonical: str | None
    noindex: bool


def read_html(body: bytes, url: str) -> HtmlFacts:
    """The links, ``<link rel=canonical>`` and robots ``noindex``/``nofollow`` of an HTML page."""
    from selectolax.lexbor import LexborHTMLParser

    from bastion.core.errors import ParseError
    from bastion.parsing.text import decode

    try:
        tree = LexborHTMLParser(decode(body))
    except ParseError:
        return HtmlFacts([], None, False)
    base_node = tree.css_first("base[href]")
    base = normalize(base_node.attributes.get("href") or "", url) if base_node else None
    base = base or url
    robots = " ".join((m.attributes.get("content") or "").lower()
                      for m in tree.css("meta[name]") if (m.attributes.get("name") or "").lower() == "robots")
    links: list[str] = []
    if "nofollow" not in robots and "none" not in robots:
        for a in tree.css("a[href]"):
            if "nofollow" in (a.attributes.get("rel") or "").lower():
                continue
            link = normalize(a.attributes.get("href") or "", base)
            if link and link not in links:
                links.append(link)
    canonical = None
    for node in tree.css("link[rel][href]"):
        if "canonical" in (node.attributes.get("rel") or "").lower().split():
            canonical = normalize(node.attributes.get("href") or "", base)
            break
    return HtmlFacts(links, canonical, "noindex" in robots or "none" in robots)


def read_sitemap(body: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of a sitemap or sitemap index. A document type declaration
    is refused (a sitemap needs none, and entities are how XML bombs work)."""
    if b"<!DOCTYPE" in body[:4096].upper() or b"<!ENTITY" in body.upper():
        raise ValueError("the sitemap declares a document type or entities, which sitemaps never need")
    root = ET.fromstring(body)
    locs = [(el.text or "").strip() for el in root.iter(f"{_SITEMAP_NS}loc")] or \
        [(el.text or "").strip() for el in root.iter("loc")]
    if root.tag.endswith("sitemapindex"):
        return [], [u for u in locs if u]
    return [u for u in locs if u], []


@dataclass
class PageRecord:
    """What the last crawl learnt about one URL."""

    key: str  # the canonical URL: the document's key
    media_type: str
    size: int
    mtime: float
    sha256: str
    etag: str | None = None
    last_modified: str | None = None
    links: list[str] = field(default_factory=list)
    noindex: bool = False  # marked noindex: its links are followed, it is not a document


class CrawlState:
    """The records of the last crawl and the bodies they describe, under the source's cache folder."""

    VERSION = 1

    def __init__(self, folder: Path):
        self.folder = folder
        self.pages: dict[str, PageRecord] = {}
        self.seen: dict[str, PageRecord] = {}  # this crawl's records, saved by :meth:`save`
        path = folder / "crawl.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") == self.VERSION:
                self.pages = {u: PageRecord(**r) for u, r in data["pages"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log("web.state_unreadable", path=str(path), error=str(exc))  # start afresh: every page is fetched

    def body_path(self, url: str) -> Path:
        return self.folder / "bodies" / hashlib.sha256(url.encode()).hexdigest()[:40]

    def keep_body(self, url: str, body: bytes) -> None:
        path = self.body_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(body)
        tmp.replace(path)

    def save(self) -> None:
        """Keep this crawl's records (pages not met are forgotten, with their bodies)."""
        write_json_atomically(self.folder / "crawl.json",
                              {"version": self.VERSION, "pages": {u: asdict(r) for u, r in self.seen.items()}})
        keep = {self.body_path(u).name for u in self.seen}
        bodies = self.folder / "bodies"
        if bodies.is_dir():
            for path in bodies.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
