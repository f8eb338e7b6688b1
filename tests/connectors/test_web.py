"""The web connector against a real HTTP server on 127.0.0.1 serving a generated site: links, a
sitemap, robots.txt, redirects, a server error, a PDF; each sync goes through a real workspace."""
from __future__ import annotations

import hashlib
import html
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from bastion.core.errors import ConfigError, IngestError
from bastion.testing import ConnectorContract, HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import EXAMPLES

NOINDEX = '<meta name="robots" content="noindex">'


@dataclass
class Page:
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Site:
    """A web site served by a real threaded HTTP server; pages can change while it runs."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.requests: list[tuple[float, str, dict[str, str]]] = []  # (time, path, headers)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append((time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}))
                page = site.pages.get(self.path)
                if self.path == "/last-words.html":  # the site goes down while this page is answered
                    site.server.shutdown()
                    site.server.server_close()
                    site.running = False
                if page is None:
                    self.send_error(404)
                    return
                etag = '"' + hashlib.sha256(page.body).hexdigest()[:16] + '"'
                modified = page.headers.get("Last-Modified")
                if page.status == 200 and (self.headers.get("If-None-Match") == etag or
                                           (modified and self.headers.get("If-Modified-Since") == modified)):
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(page.status)
                self.send_header("Content-Type", page.content_type)
                self.send_header("Content-Length", str(len(page.body)))
                if page.status == 200:
                    self.send_header("ETag", etag)
                for k, v in page.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(page.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def html(self, path: str, title: str, text: str = "", links: tuple[str, ...] | list[str] = (), head: str = "") -> None:
        anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n") if p.strip())
        self.pages[path] = Page(f"<html><head><title>{title}</title>{head}</head><body><nav><ul>{anchors}</ul></nav>"
                                f"<main><h1>{title}</h1>{paragraphs}</main></body></html>".encode())

    def fetched(self, path: str) -> int:
        return sum(p == path for _, p, _ in self.requests)

    def stop(self) -> None:
        if self.running:
            self.server.shutdown()
            self.server.server_close()
            self.running = False


@pytest.fixture
def site():
    s = Site()
    s.pages["/robots.txt"] = Page(b"User-agent: *\nDisallow: /private/\n", "text/plain")
    yield s
    s.stop()


def _sync(ws, name="site"):
    [report] = ws.sync(name)
    return report


def _texts(ws, query, user="bob"):
    return [h.text for h in ws.search(query, ws.principal(user), 10)]


def _seen(ws, words, user="bob"):
    """Whether a hit ``user`` gets for ``words`` carries them."""
    return any(words in t for t in _texts(ws, words, user))


# -- the contract ------------------------------------------------------------------------------
class TestWebContract(ConnectorContract):
    per_document_acl = True  # acl_prefixes: pages under /restricted/ carry their own ACL

    @pytest.fixture
    def backend(self):
        s = Site()
        s.pages["/robots.txt"] = Page(b"User-agent: *\nAllow: /\n", "text/plain")
        s.docs = {}  # name -> path
        self._index(s)
        yield s
        s.stop()

    @staticmethod
    def _index(s):
        s.html("/", "Home", links=sorted(s.docs.values()), head=NOINDEX)

    def add_source(self, ws, name, backend, acl):
        ws.sources.add_kind(name, "web", {"url": backend.url + "/", "delay": 0, "timeout": 5,
                                          "acl_prefixes": {"/restricted/": "group:finance"}}, acl=acl)

    def put_document(self, backend, name, text, *, acl=None):
        path = f"/restricted/{name}.html" if acl else f"/docs/{name}.html"
        backend.docs[name] = path
        backend.html(path, name.title(), text)
        self._index(backend)

    def delete_document(self, backend, name):
        del backend.pages[backend.docs.pop(name)]
        self._index(backend)

    def break_document(self, backend, name):
        backend.docs[name] = f"/docs/{name}.html"
        backend.pages[f"/docs/{name}.html"] = Page(b"internal error", "text/plain", status=500)
        self._index(backend)

    def make_unreachable(self, backend):
        backend.stop()


# -- crawling ------------------------------------------------------------------------------------
def _handbook(site):
    site.html("/", "Home", "Welcome to the staff handbook.", ["/travel.html", "/private/salaries.html",
                                                                "/deep/1.html", "http://192.0.2.1/elsewhere.html"])
    site.html("/travel.html", "Travel", "The hotel cap is EUR 180 per night.", ["/"])
    site.html("/private/salaries.html", "Salaries", "The CEO salary is secret ceoverdict.")
    for i in range(1, 4):
        site.html(f"/deep/{i}.html", f"Deep {i}", f"Depth level {i} marker deeplevel{i}.", [f"/deep/{i + 1}.html"])


def test_crawl_obeys_robots_depth_and_site_and_sends_the_user_agent(ws, site):
    _handbook(site)
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0, "max_depth": 2,
                                        "user_agent": "HandbookBot/2.0"}, acl="everyone")
    report = _sync(ws)
    assert report.documents_added == 4 and report.errors == []  # home, travel, deep/1, deep/2
    assert _seen(ws, "The hotel cap is EUR 180 per night.")
    assert site.fetched("/private/salaries.html") == 0  # robots.txt disallows /private/
    assert not _seen(ws, "ceoverdict", "alice")
    assert site.fetched("/deep/2.html") == 1 and site.fetched("/deep/3.html") == 0  # max_depth 2
    assert {h["user-agent"] for _, _, h in site.requests} == {"HandbookBot/2.0"}
    assert site.fetched("/robots.txt") == 1


def test_sitemap_pages_are_crawled_within_the_allowed_prefixes(ws, site):
    site.html("/kb/a.html", "A", "Kiosk opening hours are posted weekly kioskhours.")
    site.html("/kb/b.html", "B", "Badge renewal happens every spring badgerenew.")
    site.html("/blog/c.html", "C", "Blog chatter blogchatter.")
    urls = "".join(f"<url><loc>{site.url}{p}</loc></url>" for p in ("/kb/a.html", "/kb/b.html", "/blog/c.html"))
    site.pages["/sitemap.xml"] = Page(f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                                      f"{urls}</urlset>".encode(), "application/xml")
    ws.sources.add_kind("site", "web", {"sitemap": site.url + "/sitemap.xml", "delay": 0,
                                        "allowed_prefixes": ["/kb/"]}, acl="everyone")
    report = _sync(ws)
    assert report.documents_added == 2
    assert _seen(ws, "kioskhours")
    assert site.fetched("/blog/c.html") == 0


def test_recrawl_asks_conditionally_and_downloads_nothing_unchanged(ws, site):
    _handbook(site)
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0, "max_depth": 1}, acl="everyone")
    _sync(ws)
    first = len(site.requests)
    again = _sync(ws)
    assert again.documents_unchanged == 3 and again.chunks_embedded == 0
    conditional = [h for _, p, h in site.requests[first:] if p.endswith(".html") or p == "/"]
    assert conditional and all("if-none-match" in h for h in conditional)
    site.html("/travel.html", "Travel", "The hotel cap is EUR 210 per night from May.", ["/"])
    site.pages["/travel.html"].headers["Last-Modified"] = "Tue, 01 Dec 2026 10:00:00 GMT"
    changed = _sync(ws)
    assert changed.documents_updated == 1 and changed.documents_unchanged == 2
    assert _seen(ws, "The hotel cap is EUR 210 per night from May.")
    assert not _seen(ws, "The hotel cap is EUR 180 per night.")
    before = len(site.requests)
    assert _sync(ws).documents_unchanged == 3
    [travel] = [h for _, p, h in site.requests[before:] if p == "/travel.html"]
    assert travel["if-modified-since"] == "Tue, 01 Dec 2026 10:00:00 GMT"


def test_server_error_keeps_the_page_and_404_or_410_deletes_it(ws, site):
    site.html("/", "Home", "Start here.", ["/a.html", "/b.html", "/c.html"])
    site.html("/a.html", "A", "Alpha text about the canteen menu canteenmenu.", ["/hidden.html"])
    site.html("/hidden.html", "Hidden", "Reached only through page a hiddenpage.")
    site.html("/b.html", "B", "Beta text about parking permits parkingpermit.")
    site.html("/c.html", "C", "Gamma text about the gym gymtimes.")
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0}, acl="everyone")
    assert _sync(ws).documents_added == 5
    site.pages["/a.html"] = Page(b"<h1>Service Unavailable</h1>", status=503)
    del site.pages["/b.html"]
    site.pages["/c.html"] = Page(b"gone", "text/plain", status=410)
    report = _sync(ws)
    assert report.documents_deleted == 2 and report.documents_unchanged == 2  # home and hidden
    [error] = report.errors
    assert error["file"] == site.url + "/a.html" and "503" in error["reason"] and "kept" in error["reason"]
    assert _seen(ws, "canteenmenu")  # the last good version stays
    assert _seen(ws, "hiddenpage")  # its stored links were followed
    assert not _seen(ws, "parkingpermit", "alice") and not _seen(ws, "gymtimes", "alice")


def test_pdf_redirects_and_canonical_urls(ws, site):
    pdf = (EXAMPLES / "finance" / "q3_2026_results_summary.pdf").read_bytes()
    site.html("/", "Home", "Reports.", ["/files/q3", "/old-travel.html", "/travel.html?utm=mail", "/away.html"])
    site.pages["/files/q3"] = Page(pdf, "application/pdf")
    site.pages["/old-travel.html"] = Page(b"", status=301, headers={"Location": "/travel.html"})
    site.pages["/away.html"] = Page(b"", status=302, headers={"Location": "http://192.0.2.1/x.html"})
    site.html("/travel.html", "Travel", "The hotel cap is EUR 180 per night.",
              head='<link rel="canonical" href="/travel.html">')
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0}, acl="everyone")
    report = _sync(ws)
    assert report.documents_added == 3 and report.errors == []  # home, the PDF, travel once
    hits = ws.search("EUR 48.2 million", ws.principal("bob"), 10)
    pdf_hits = [h for h in hits if h.path == site.url + "/files/q3"]
    assert pdf_hits and pdf_hits[0].page is not None
    assert {h.path for h in ws.search("hotel cap", ws.principal("bob"), 10)} >= {site.url + "/travel.html"}
    assert not any("utm" in h.path for h in ws.search("hotel cap", ws.principal("bob"), 10))


def test_a_canonical_link_cannot_move_a_page_out_of_its_acl(ws, site):
    site.html("/", "Home", "Start.", ["/hr/pay.html"])
    site.html("/hr/pay.html", "Pay", "Salary bands are confidential salaryband.",
              head='<link rel="canonical" href="/public/pay.html">')
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0, "acl_prefixes": {"/hr/": "group:finance"}},
                        acl="everyone")
    _sync(ws)
    assert _seen(ws, "salaryband", "alice")  # positive control: finance reads it
    assert not _seen(ws, "salaryband", "bob")
    assert {h.path for h in ws.search("salaryband", ws.principal("alice"), 10)} >= {site.url + "/hr/pay.html"}


def test_oversized_page_is_reported_and_politeness_delay_is_kept(ws, site):
    site.html("/", "Home", "Start.", ["/big.html", "/small.html"])
    site.html("/big.html", "Big", "word " * 5000)
    site.html("/small.html", "Small", "Small page about lockers lockerrules.")
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0.15, "max_bytes": 4000}, acl="everyone")
    report = _sync(ws)
    [error] = report.errors
    assert error["file"].endswith("/big.html") and "4000-byte limit" in error["reason"]
    assert _seen(ws, "lockerrules")
    times = [t for t, _, _ in site.requests]
    assert all(b - a >= 0.14 for a, b in zip(times, times[1:]))


def test_unusable_robots_or_start_page_fails_the_sync_and_keeps_the_index(ws, site):
    site.html("/", "Home", "Start.", ["/a.html"])
    site.html("/a.html", "A", "The canteen opens at 11:30 canteenopen.")
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0}, acl="everyone")
    _sync(ws)
    site.pages["/robots.txt"] = Page(b"down", "text/plain", status=503)
    with pytest.raises(IngestError, match="robots.txt answered 503"):
        ws.sync("site")
    site.pages["/robots.txt"] = Page(b"User-agent: *\nDisallow: /\n", "text/plain")
    with pytest.raises(IngestError, match="forbids"):
        ws.sync("site")
    site.pages["/robots.txt"] = Page(b"", "text/plain")
    site.pages["/"] = Page(b"moved away", "text/plain", status=404)
    with pytest.raises(IngestError, match="start page .* could not be read .*404"):
        ws.sync("site")
    assert _seen(ws, "canteenopen")


def test_site_going_down_mid_crawl_fails_the_sync_and_deletes_nothing(ws, site):
    site.html("/", "Home", "Start.", ["/a.html", "/b.html"])
    site.html("/a.html", "A", "The canteen opens at 11:30 canteenopen.")
    site.html("/b.html", "B", "Parking permits are renewed in March parkingmarch.")
    ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0}, acl="everyone")
    _sync(ws)
    site.html("/", "Home", "Start.", ["/last-words.html", "/a.html", "/b.html"])
    site.html("/last-words.html", "Bye", "The server stops after this page.")
    with pytest.raises(IngestError, match="became unreachable during the crawl"):
        ws.sync("site")
    assert _seen(ws, "canteenopen") and _seen(ws, "parkingmarch")


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "ftp://example.org/"}, "not an http"),
    ({"url": "https://example.org/", "max_pages": "many"}, "max_pages"),
    ({"url": "https://example.org/", "max_depht": 3}, "max_depht: unknown option"),
    ({"url": "https://example.org/", "allowed_prefixes": ["https://other.org/"]}, "must be a path"),
    ({"url": "https://example.org/", "acl_prefixes": {"/hr/": "group:"}}, "invalid ACL"),
    ({}, "needs -o url="),
    ({"url": "https://example.org/blog/", "allowed_prefixes": "/kb/,/faq/"}, "outside allowed_prefixes"),
])
def test_bad_options_are_refused_before_anything_is_stored(options_ws, options, message):
    with pytest.raises(ConfigError, match=message):
        options_ws.sources.add_kind("site", "web", options, acl="everyone")
    assert options_ws.sources.list() == []


def test_cli_adds_a_web_source_with_options(tmp_path, site, monkeypatch):
    import bastion.cli.app as cli

    site.html("/", "Home", "The cafeteria closes at 15:00 cafeteriaclose.")
    home = tmp_path / "cli-ws"
    Workspace.init(home)
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()), raising=False)
    result = CliRunner().invoke(cli.app, ["--home", str(home), "source", "add", "site", "--kind", "web",
                                          "-o", f"url={site.url}/", "-o", "delay=0", "--acl", "everyone", "--json"])
    assert result.exit_code == 0, result.output
    ws = Workspace.open(home, embedder=HashEmbedder())
    [row] = ws.sources.list()
    assert (row.kind, row.config["url"], row.config["delay"]) == ("web", f"{site.url}/", 0)
    assert _sync(ws).documents_added == 1
    assert (home / "data" / "connectors" / "web" / "source-site" / "crawl.json").is_file()
