"""A web site: crawled from a start URL and/or a sitemap, politely, within the site.

What is crawled: pages of the start URL's host whose URL begins with one of ``allowed_prefixes``
(default: the whole host), reached by links (``<a href>``, up to ``max_depth`` links from a
seed) or listed in the sitemap, at most ``max_pages`` of them. ``robots.txt`` is obeyed for
``user_agent`` (its ``Crawl-delay`` too, when longer than ``delay``); a page marked ``noindex``
is not indexed and one marked ``nofollow`` lends no links. Redirects are followed while they
stay within the site. Each document's key is its canonical URL (``<link rel="canonical">``
within the site, else the URL that answered), so one page reached by two URLs is one document.

HTML goes to the HTML parser; PDF, Word, Excel, CSV, Markdown and plain text responses go to
theirs by media type; anything else is not a document. A body over ``max_bytes`` is reported
for that page, not read.

Incremental: the connector keeps, in its cache folder, each page's ``ETag``/``Last-Modified``,
links and body. A re-crawl asks with ``If-None-Match``/``If-Modified-Since``; ``304 Not
Modified`` means unchanged (nothing is downloaded, parsed or embedded). A known page answering
404 or 410 is deleted from the index; a 5xx, a timeout or another error is reported for that
page and its last indexed version stays (its stored links are still followed, so pages behind
it are not lost). The whole crawl fails with :class:`IngestError` — deleting nothing — when the
site cannot be reached, the start page or sitemap does not answer 200 or 304, or ``robots.txt``
answers with a server error or forbids the start page.

ACL: the source's ACL, or for a page under a key of ``acl_prefixes`` (a path such as ``/hr/`` or
a full URL prefix; the longest match wins) that prefix's ACL.

The original of a page is its URL (the document's key), within the crawled site: Bastion never
fetches it for a reader, the reader's browser opens it.

>>> WebConnector(url="https://intranet.example.org/handbook/", default_acl=frozenset({"everyone"}),
...              max_pages=50, delay=0.5).scope
('https://intranet.example.org/',)
"""
from __future__ import annotations

import tempfile
import time
import urllib.robotparser
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.connectors._options import checked, comma_list
from bastion.connectors._web_pages import (
    CrawlState,
    PageRecord,
    http_time,
    media_type,
    normalize,
    read_html,
    read_sitemap,
)
from bastion.connectors.protocol import Original, SourceItem
from bastion.core.errors import AccessError, ConfigError, IngestError
from bastion.core.types import parse_acl
from bastion.events import log

MAX_REDIRECTS = 5
MAX_SITEMAPS = 50


class WebOptions(BaseModel):
    """The options of a ``web`` source (``bastion source add NAME --kind web -o url=...``)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # the start page
    sitemap: str | None = None  # a sitemap.xml (or sitemap index) listing pages to crawl
    allowed_prefixes: list[str] = Field(default_factory=list)  # URL or path prefixes; default the whole host
    max_pages: int = Field(default=1000, ge=1, le=1_000_000)
    max_depth: int = Field(default=10, ge=0, le=1000)
    user_agent: str = Field(default="BastionBot/1.0", min_length=1, max_length=200)
    delay: float = Field(default=1.0, ge=0, le=600)  # seconds between two requests
    timeout: float = Field(default=30.0, gt=0, le=600)
    max_bytes: int = Field(default=50 * 2**20, ge=1)
    acl_prefixes: dict[str, str] = Field(default_factory=dict)  # path or URL prefix -> ACL text

    _split = field_validator("allowed_prefixes", mode="before")(comma_list)


@dataclass
class _Answer:
    url: str  # the URL that answered, after redirects
    status: int
    headers: httpx.Headers
    body: bytes | None = None
    error: str | None = None


class _Unreachable(Exception):
    pass


class WebConnector:
    """Crawl one web site (see the module's description)."""

    def __init__(self, *, default_acl: frozenset[str], cache_dir: str | None = None, **options: Any):
        self.options = o = checked(WebOptions, "web", options)
        if not o.url and not o.sitemap:
            raise ConfigError("a web source needs -o url=START_PAGE or -o sitemap=SITEMAP_URL (or both)")
        seeds = [u for u in (o.url, o.sitemap) if u]
        normal = [normalize(u) for u in seeds]
        if any(n is None for n in normal):
            raise ConfigError(f"web source: {seeds[normal.index(None)]!r} is not an http(s) URL")
        self.start, self.sitemap = (normalize(o.url) if o.url else None), (normalize(o.sitemap) if o.sitemap else None)
        first = self.start or self.sitemap
        assert first is not None  # checked above
        self.origin = first.split("/", 3)[:3]
        origin = "/".join(self.origin)
        if self.start and self.sitemap and not self.sitemap.startswith(origin + "/"):
            raise ConfigError(f"web source: the sitemap {o.sitemap!r} is not on the start page's site {origin!r}")
        self.scope = tuple(self._prefix(p, origin) for p in o.allowed_prefixes) or (origin + "/",)
        if self.start and not self.in_scope(self.start):  # else nothing would be crawled, and all deleted
            raise ConfigError(f"web source: the start page {o.url!r} is outside allowed_prefixes {o.allowed_prefixes}")
        self.default_acl = default_acl
        try:
            self.acl_prefixes = sorted(((self._prefix(p, origin), parse_acl(a)) for p, a in o.acl_prefixes.items()),
                                       key=lambda pa: -len(pa[0]))
        except AccessError as exc:
            raise ConfigError(f"web source: invalid ACL in acl_prefixes: {exc}") from None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cache_dir is None:  # no workspace to keep state in: each scan downloads every page
            self._tmp = tempfile.TemporaryDirectory(prefix="bastion-web-")
            cache_dir = self._tmp.name
        self.cache_dir = Path(cache_dir)
        self._last_request = 0.0
        self._delay = o.delay

    @staticmethod
    def _prefix(prefix: str, origin: str) -> str:
        full = normalize(prefix, origin + "/") if prefix.startswith("/") else normalize(prefix)
        if full is None or not (full + "/").startswith(origin + "/"):
            raise ConfigError(f"web source: prefix {prefix!r} must be a path ('/docs/') or a URL on {origin!r}")
        return full

    def in_scope(self, url: str) -> bool:
        return any(url.startswith(p) or url + "/" == p for p in self.scope)

    def acl_for(self, url: str) -> frozenset[str]:
        return next((acl for prefix, acl in self.acl_prefixes if url.startswith(prefix)), self.default_acl)

    def original(self, key: str) -> Original | None:
        """The page ``key`` as a link (no bytes): None unless it is an http(s) URL within the site."""
        url = normalize(key)
        if url is None or url != key or not self.in_scope(url):
            return None
        name = url.rstrip("/").rsplit("/", 1)[-1] or "index.html"
        return Original(name=name, media_type="text/html", url=url)

    # -- HTTP ------------------------------------------------------------------------------------
    def _client(self) -> httpx.Client:
        o = self.options
        return httpx.Client(timeout=httpx.Timeout(o.timeout), follow_redirects=False,
                            headers={"User-Agent": o.user_agent})

    def _wait(self) -> None:
        pause = self._last_request + self._delay - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last_request = time.monotonic()

    def _get(self, client: httpx.Client, url: str, validators: PageRecord | None, any_type: bool = False) -> _Answer:
        """One GET, the body (of a document, or of any type with ``any_type``) read up to ``max_bytes``.
        Raises :class:`_Unreachable` when the site cannot be connected to at all."""
        headers = {}
        if validators is not None and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators is not None and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        self._wait()
        try:
            with client.stream("GET", url, headers=headers) as response:
                answer = _Answer(str(response.url), response.status_code, response.headers)
                if response.status_code != 200 or (
                        not any_type and media_type(response.headers.get("content-type"), url) is None):
                    return answer
                limit = self.options.max_bytes
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    answer.error = f"the page is {int(declared)} bytes, over the {limit}-byte limit (max_bytes)"
                    return answer
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        answer.error = f"the page is over the {limit}-byte limit (max_bytes)"
                        return answer
                answer.body = bytes(body)
                return answer
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise _Unreachable(f"cannot connect to {url}: {exc}") from exc
        except httpx.HTTPError as exc:  # a timeout, a broken response: this page only
            return _Answer(url, 0, httpx.Headers(), error=f"{type(exc).__name__} fetching {url}: {exc or 'no answer'}")
        finally:
            self._last_request = time.monotonic()  # the delay runs from the end of one request to the next

    def _fetch(self, client: httpx.Client, url: str, robots: urllib.robotparser.RobotFileParser,
               known: dict[str, PageRecord], any_type: bool = False) -> _Answer | None:
        """GET ``url``, following redirects while they stay within the site and robots.txt allows them;
        None when a redirect leads out of it."""
        for _ in range(MAX_REDIRECTS + 1):
            answer = self._get(client, url, known.get(url), any_type)
            if answer.status not in (301, 302, 303, 307, 308):
                return answer
            target = normalize(answer.headers.get("location", ""), url)
            if target is None or not self.in_scope(target) or not robots.can_fetch(self.options.user_agent, target):
                log("web.redirect_out_of_scope", url=url, location=answer.headers.get("location"))
                return None
            url = target
        return _Answer(url, 0, httpx.Headers(), error=f"more than {MAX_REDIRECTS} redirects from {url}")

    def _robots(self, client: httpx.Client) -> urllib.robotparser.RobotFileParser:
        origin = "/".join(self.origin)
        robots = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
        self._wait()
        try:
            response = client.get(origin + "/robots.txt")
        except httpx.HTTPError as exc:
            raise IngestError(f"web source {origin!r} cannot be reached ({type(exc).__name__}: {exc}); "
                              "nothing indexed was changed") from exc
        finally:
            self._last_request = time.monotonic()
        if response.status_code >= 500:
            raise IngestError(f"{origin}/robots.txt answered {response.status_code}: the site may not be crawled "
                              "until it answers; nothing indexed was changed")
        robots.parse(response.text.splitlines() if response.status_code == 200 else [])
        delay = robots.crawl_delay(self.options.user_agent)
        if delay is not None:
            self._delay = max(self._delay, float(delay))
        return robots

    # -- crawl -----------------------------------------------------------------------------------
    def _seeds(self, client: httpx.Client, robots: urllib.robotparser.RobotFileParser) -> list[str]:
        seeds = [self.start] if self.start else []
        pending, done = deque([self.sitemap] if self.sitemap else []), 0
        while pending and done < MAX_SITEMAPS:
            url = pending.popleft()
            done += 1
            answer = self._fetch(client, url, robots, {}, any_type=True)
            if answer is None or answer.status != 200 or answer.body is None:
                why = (answer.error or f"HTTP {answer.status}") if answer else "a redirect out of the site"
                raise IngestError(f"the sitemap {url} could not be read ({why}); nothing indexed was changed")
            try:
                pages, nested = read_sitemap(answer.body)
            except (ValueError, SyntaxError) as exc:
                raise IngestError(f"the sitemap {url} is not a valid sitemap: {exc}") from None
            seeds += [n for n in (normalize(p) for p in pages) if n]
            site = "/".join(self.origin) + "/"
            pending.extend(n for n in (normalize(p) for p in nested) if n and n.startswith(site))
        return seeds

    def scan(self) -> Iterator[SourceItem]:
        state = CrawlState(self.cache_dir)
        try:
            with self._client() as client:
                yield from self._crawl(client, state)
        except _Unreachable as exc:
            raise IngestError(f"web source {'/'.join(self.origin)!r} became unreachable during the crawl ({exc}); "
                              "nothing indexed was changed") from None
        state.save()

    def _crawl(self, client: httpx.Client, state: CrawlState) -> Iterator[SourceItem]:
        robots = self._robots(client)
        agent = self.options.user_agent
        if self.start and not robots.can_fetch(agent, self.start):
            raise IngestError(f"robots.txt of {'/'.join(self.origin)} forbids {agent!r} to fetch the start page {self.start}")
        queue = deque((url, 0) for url in self._seeds(client, robots))
        visited: set[str] = set()
        keys: set[str] = set()
        listed = 0
        while queue and listed < self.options.max_pages:
            url, depth = queue.popleft()
            if url in visited or not self.in_scope(url) or not robots.can_fetch(agent, url):
                continue
            visited.add(url)
            answer = self._fetch(client, url, robots, state.pages)
            if url == self.start and (answer is None or answer.status not in (200, 304) or answer.error):
                why = (answer.error or f"HTTP {answer.status}") if answer else "a redirect out of the site"
                raise IngestError(f"the start page {url} could not be read ({why}); nothing indexed was changed")
            if answer is None or (answer.url != url and answer.url in visited):
                continue
            visited.add(answer.url)
            item, links = self._item(answer, state)
            if item is not None and item.key not in keys:
                keys.add(item.key)
                listed += 1
                yield item
            if depth < self.options.max_depth:
                queue.extend((link, depth + 1) for link in links if link not in visited)

    def _item(self, answer: _Answer, state: CrawlState) -> tuple[SourceItem | None, list[str]]:
        """The document an answer is (None: deleted, or not a document) and the links to follow."""
        url, before = answer.url, state.pages.get(answer.url)
        if answer.status in (404, 410):
            return None, []
        if answer.status == 304 and before is not None:
            state.seen[url] = before
            return (None if before.noindex else self._listed(url, before, state)), before.links
        if answer.status != 200 or answer.error or answer.body is None:
            if answer.status == 200 and not answer.error:
                return None, []  # not a media type the parsers read
            why = answer.error or f"HTTP {answer.status} {httpx.codes.get_reason_phrase(answer.status)}".strip()
            key = before.key if before else url
            if before is not None:
                state.seen[url] = before
            error = f"{why} from {url}" + ("; the last indexed version is kept" if before else "")
            return SourceItem(key=key, uri=url, media_type=before.media_type if before else "html",
                              acl=self.acl_for(key), load=_refused, error=error), before.links if before else []
        return self._fresh(answer, before, state)

    def _fresh(self, answer: _Answer, before: PageRecord | None, state: CrawlState) -> tuple[SourceItem | None, list[str]]:
        import hashlib

        url, body = answer.url, answer.body or b""
        kind = media_type(answer.headers.get("content-type"), url)
        assert kind is not None  # _get reads only bodies of a media type the parsers take
        links, key, noindex = [], url, "noindex" in answer.headers.get("x-robots-tag", "").lower()
        if kind == "html":
            facts = read_html(body, url)
            links, noindex = facts.links, noindex or facts.noindex
            # a canonical URL under another ACL is ignored: a page cannot move itself out of its ACL
            if facts.canonical and self.in_scope(facts.canonical) and self.acl_for(facts.canonical) == self.acl_for(url):
                key = facts.canonical
        digest = hashlib.sha256(body).hexdigest()
        modified = http_time(answer.headers.get("last-modified"))
        if before is not None and before.sha256 == digest and before.key == key:
            mtime = before.mtime
        else:
            mtime = modified if modified is not None and (before is None or modified != before.mtime) else time.time()
        record = PageRecord(key=key, media_type=kind, size=len(body), mtime=mtime, sha256=digest,
                            etag=answer.headers.get("etag"), last_modified=answer.headers.get("last-modified"),
                            links=links, noindex=noindex)
        state.keep_body(url, body)
        state.seen[url] = record
        if noindex:
            return None, links
        return self._listed(url, record, state), links

    def _listed(self, url: str, record: PageRecord, state: CrawlState) -> SourceItem:
        path, options = state.body_path(url), self.options

        def load() -> bytes:
            try:
                return path.read_bytes()
            except FileNotFoundError:  # the stored body is gone: fetch the page again
                try:
                    with httpx.Client(timeout=options.timeout, headers={"User-Agent": options.user_agent}) as client:
                        response = client.get(url)
                except httpx.HTTPError as exc:
                    raise OSError(f"cannot fetch {url}: {exc}") from exc
                if response.status_code != 200 or len(response.content) > options.max_bytes:
                    raise OSError(f"{url} answered HTTP {response.status_code}") from None
                return response.content

        return SourceItem(key=record.key, uri=url, media_type=record.media_type, acl=self.acl_for(record.key),
                          load=load, mtime=record.mtime, size=record.size, metadata={"etag": record.etag})


def _refused() -> bytes:
    raise OSError("a page that failed to download is never read")
