"""A real OpenLDAP server (``slapd``, Debian package ``slapd``) per test, on 127.0.0.1 and a free port.

The server runs in the foreground from a generated ``slapd.conf`` with an mdb database in a temp
folder and the core, cosine, inetorgperson and nis schemas. It holds:

- ``ou=people``: alice, bob, carol, dave (disabled: ``employeeType=disabled``), erin
- ``ou=groups``: Finance (alice and the nested group Analysts), Analysts (carol), Staff (alice, bob,
  dave), a posixGroup ops (memberUid bob), and two groups in a cycle, Loop A and Loop B (erin)
- ``ou=services``: ``cn=bastion``, the read-only account Bastion binds as

``ws`` is a workspace with a local admin (root), a finance folder readable by ``group:finance``
and a public one, and ``[directory.ldap]`` pointing at the test slapd.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.core.config import LdapDirectoryConfig
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import free_port, stop_process, write

SUFFIX = "dc=example,dc=org"
ADMIN_DN, ADMIN_PW = f"cn=admin,{SUFFIX}", "admin-secret"
READER_DN, READER_PW = f"cn=bastion,ou=services,{SUFFIX}", "reader-secret-1"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def _slapd() -> str:
    path = shutil.which("slapd") or "/usr/sbin/slapd"
    if not Path(path).exists():
        raise RuntimeError("slapd is not installed: apt-get install slapd (listed in scripts/test-packages.txt)")
    return path


def _conf(root: Path, schemas: tuple[str, ...] = SCHEMAS, extra: tuple[str, ...] = ()) -> str:
    # Debian builds the mdb backend as a module; a build with it compiled in needs no moduleload
    modules = next((d for d in ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/ldap", "/usr/lib/aarch64-linux-gnu/ldap")
                    if list(Path(d).glob("back_mdb*"))), None)
    lines = [f"include /etc/ldap/schema/{s}.schema" for s in schemas]
    if modules:
        lines += [f"modulepath {modules}", "moduleload back_mdb"]
    lines += [*extra,
        f"pidfile {root / 'slapd.pid'}",
        "database mdb",
        "maxsize 10485760",
        f'suffix "{SUFFIX}"',
        f'rootdn "{ADMIN_DN}"',
        f"rootpw {ADMIN_PW}",
        f"directory {root / 'db'}",
        "access to attrs=userPassword by anonymous auth by * none",
        "access to * by users read by * none",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Slapd:
    """A running slapd and what the tests change in it (as the directory's administrator)."""

    url: str

    def admin(self):
        from ldap3 import Connection, Server

        return Connection(Server(self.url), ADMIN_DN, ADMIN_PW, auto_bind=True, raise_exceptions=True)

    @staticmethod
    def user_dn(uid: str) -> str:
        return f"uid={uid},ou=people,{SUFFIX}"

    @staticmethod
    def group_dn(cn: str) -> str:
        return f"cn={cn},ou=groups,{SUFFIX}"

    def add_user(self, uid: str, name: str, *, disabled: bool = False) -> None:
        attrs = {"cn": name, "sn": name.split()[-1], "uid": uid, "mail": f"{uid}@example.org"}
        if disabled:
            attrs["employeeType"] = "disabled"
        with self.admin() as c:
            c.add(self.user_dn(uid), ["inetOrgPerson"], attrs)

    def add_group(self, cn: str, members: list[str]) -> None:
        with self.admin() as c:
            c.add(self.group_dn(cn), ["groupOfNames"], {"cn": cn, "member": members})

    def set_members(self, cn: str, members: list[str]) -> None:
        from ldap3 import MODIFY_REPLACE

        with self.admin() as c:
            c.modify(self.group_dn(cn), {"member": [(MODIFY_REPLACE, members)]})

    def set_disabled(self, uid: str, disabled: bool) -> None:
        from ldap3 import MODIFY_DELETE, MODIFY_REPLACE

        change = [(MODIFY_REPLACE, ["disabled"])] if disabled else [(MODIFY_DELETE, [])]
        with self.admin() as c:
            c.modify(self.user_dn(uid), {"employeeType": change})

    def delete(self, dn: str) -> None:
        with self.admin() as c:
            c.delete(dn)

    def populate(self) -> None:
        from ldap3 import Connection, Server

        with Connection(Server(self.url), ADMIN_DN, ADMIN_PW, auto_bind=True, raise_exceptions=True) as c:
            c.add(SUFFIX, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
            for ou in ("people", "groups", "services", "empty"):
                c.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
            c.add(READER_DN, ["organizationalRole", "simpleSecurityObject"],
                  {"cn": "bastion", "userPassword": ssha(READER_PW)})
        for uid, name in (("alice", "Alice Martin"), ("bob", "Bob Stone"), ("carol", "Carol Wu"), ("erin", "Erin Ode")):
            self.add_user(uid, name)
        self.add_user("dave", "Dave Gone", disabled=True)
        u, g = self.user_dn, self.group_dn
        self.add_group("Analysts", [u("carol")])
        self.add_group("Finance", [u("alice"), g("Analysts")])
        self.add_group("Staff", [u("alice"), u("bob"), u("dave")])
        self.add_group("Loop A", [g("Loop B")])
        self.add_group("Loop B", [g("Loop A"), u("erin")])
        with self.admin() as c:
            c.add(g("ops"), ["posixGroup"], {"cn": "ops", "gidNumber": 5000, "memberUid": ["bob"]})


@contextmanager
def running_slapd(root: Path, schemas: tuple[str, ...] = SCHEMAS, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """slapd in the foreground on a free loopback port, its database under ``root``; yields its URL.
    ``extra``: global slapd.conf lines (TLS settings)."""
    (root / "db").mkdir(parents=True)
    (root / "slapd.conf").write_text(_conf(root, schemas, extra), encoding="utf-8")
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    proc = subprocess.Popen([_slapd(), "-d", "0", "-h", f"{url}/", "-f", str(root / "slapd.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                assert proc.stderr is not None
                raise RuntimeError(f"slapd exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("slapd did not start listening within 15 s") from None
                time.sleep(0.05)
        yield url
    finally:
        stop_process(proc)
        if proc.stderr is not None:
            proc.stderr.close()


PASSWORD_ENV = "BASTION_TEST_LDAP_PASSWORD"


def ldap_settings(url: str, **over) -> dict:
    """``[directory.ldap]`` for the test slapd, with ``over`` laid over it."""
    settings = {"url": url, "bind_dn": READER_DN, "bind_password_env": PASSWORD_ENV,
                "user_base": f"ou=people,{SUFFIX}", "group_base": f"ou=groups,{SUFFIX}",
                "disabled_filter": "(employeeType=disabled)"}
    settings.update(over)
    return settings


@pytest.fixture
def ws(tmp_path, monkeypatch, slapd):
    """A workspace with a local admin (root), a finance folder readable by group:finance, a public one."""
    monkeypatch.setenv(PASSWORD_ENV, READER_PW)
    docs = tmp_path / "docs"
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    write(docs / "finance" / "q3.md", "# Q3 results\n\nQ3 revenue was EUR 48.2 million.\n")
    write(docs / "public" / "canteen.md", "# Canteen\n\nThe canteen opens at noon; revenue of the canteen is small.\n")
    Workspace.init(tmp_path / "ws")
    w = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    w.directory.add_user("root", groups=["it"], role="admin")
    w.sources.add_folder("docs", docs, acl="everyone")
    w.sync()
    w.config.directory.ldap = LdapDirectoryConfig(**ldap_settings(slapd.url))
    yield w
    w.close()


@pytest.fixture
def slapd(tmp_path_factory) -> Iterator[Slapd]:
    """A fresh, populated slapd for one test; stopped and removed after it."""
    with running_slapd(tmp_path_factory.mktemp("slapd")) as url:
        server = Slapd(url)
        server.populate()
        yield server


def make_certificates(root: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (CA, certificate, key) PEM files."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (root / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n", encoding="utf-8")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.ext", "-out", "server.pem")
    return root / "ca.pem", root / "server.pem", root / "server.key"
