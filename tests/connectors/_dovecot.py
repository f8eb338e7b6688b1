"""A real Dovecot IMAP server for tests: a foreground process on 127.0.0.1, torn down after.

The server gets its own temporary folder (configuration, run and state folders, maildirs,
a passwd-file of test users). Run as root (CI), its mail and login processes drop to
``nobody``; run as another user, everything runs as that user. ``tls=True`` serves STARTTLS
on ``port`` and implicit TLS on ``tls_port``, with a certificate signed by a throwaway CA
(``Dovecot.ca_file``), and refuses plaintext logins.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port, stop_process

CONF = """\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 0
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
service anvil {{
  chroot =
}}
"""
PLAIN = "ssl = no\ndisable_plaintext_auth = no"
TLS = "ssl = required\ndisable_plaintext_auth = yes\nssl_cert = <{d}/server.pem\nssl_key = <{d}/server.key"


USERS = 100  # mailbox users per server


def dovecot_binary() -> str:
    found = shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
                                             if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError("Dovecot is not installed: `apt-get install dovecot-imapd` (listed in scripts/test-packages.txt)")
    return found


def _write_certificates(folder: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bastion test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    (folder / "server.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))


@dataclass
class Dovecot:
    """A running server: ``port``, ``new_user()``; ``ca_file`` and ``tls_port`` when TLS is on."""

    folder: Path
    port: int
    process: subprocess.Popen
    ca_file: Path | None = None
    users: list[tuple[str, str]] = field(default_factory=list)
    tls_port: int = 0  # implicit TLS (IMAPS), when TLS is on

    def new_user(self) -> tuple[str, str]:
        """A (login, password) no test used before. Users are written once, at start: Dovecot notices a
        rewritten passwd-file only when its modification time moves on a whole second."""
        return self.users.pop()

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "dovecot.log").read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_dovecot(*, tls: bool = False) -> Dovecot:
    binary = dovecot_binary()
    # not under pytest's tmp_path: that is private to the test user, and the mail processes run as nobody
    folder = Path(tempfile.mkdtemp(prefix="bastion-dovecot-"))
    os.chmod(folder, 0o755)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        user, group = pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name
    else:
        pw = pwd.getpwuid(os.geteuid())
        user, group = pw.pw_name, grp.getgrgid(os.getegid()).gr_name
    (folder / "mail").mkdir()
    if os.geteuid() == 0:
        os.chown(folder / "mail", pw.pw_uid, pw.pw_gid)
    users = [(f"user{n:03d}", secrets.token_hex(12)) for n in range(USERS)]
    (folder / "users").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users))
    ssl = PLAIN
    if tls:
        _write_certificates(folder)
        ssl = TLS.format(d=folder)
    port = free_port()
    tls_port = free_port() if tls else 0  # 0: no implicit-TLS listener
    (folder / "dovecot.conf").write_text(CONF.format(d=folder, ssl=ssl, user=user, group=group, port=port,
                                                     tls_port=tls_port))
    with open(folder / "stdout.log", "wb") as out:  # a file, not a pipe: nothing reads it while the server runs
        process = subprocess.Popen([binary, "-F", "-c", str(folder / "dovecot.conf")], stdout=out,
                                   stderr=subprocess.STDOUT)
    server = Dovecot(folder, port, process, folder / "ca.pem" if tls else None, users, tls_port)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = (folder / "stdout.log").read_text(errors="replace")
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"Dovecot exited with {process.returncode}: {out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            if s.recv(64).startswith(b"* OK"):
                return server
        time.sleep(0.05)
    log = server.log()
    server.stop()
    raise RuntimeError(f"Dovecot did not listen on 127.0.0.1:{port} within 15 s; its log:\n{log}")
