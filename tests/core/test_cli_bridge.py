"""The CLI bridge's credential: the signed exchange and the bridge file's permissions."""
from __future__ import annotations

import os

import pytest

from bastion.core import cli_bridge
from bastion.core.cli_bridge import Bridge, BridgeAuthError, NonceWindow

SECRET = bytes(range(32))
BODY = b'{"query": "hotel cap", "user": "bob"}'


def bridge(**changes) -> Bridge:
    fields = {"url": "http://127.0.0.1:8900", "pid": os.getpid(), "secret": SECRET, "config": "c" * 64}
    return Bridge(**(fields | changes))


def test_a_signed_request_verifies_and_yields_its_nonce():
    header = cli_bridge.sign_request(SECRET, BODY, now=1000.0, nonce="0f" * 16)
    assert cli_bridge.verify_request(SECRET, header, BODY, now=1000.5) == "0f" * 16
    assert SECRET.hex() not in header  # the secret never travels


@pytest.mark.parametrize("case", ["other body", "other secret", "too old", "from the future", "malformed",
                                  "missing", "bad nonce", "not a time"])
def test_requests_that_do_not_check_out_are_refused(case):
    header = cli_bridge.sign_request(SECRET, BODY, now=1000.0)
    secret, body, now = SECRET, BODY, 1000.0
    if case == "other body":
        body = BODY.replace(b"bob", b"alice")
    elif case == "other secret":
        secret = bytes(32)
    elif case == "too old":
        now = 1000.0 + cli_bridge.MAX_SKEW_S + 1
    elif case == "from the future":
        now = 1000.0 - cli_bridge.MAX_SKEW_S - 1
    elif case == "malformed":
        header = header.replace("v1", "v0")
    elif case == "missing":
        header = None
    elif case == "not a time":  # signed, but it would never expire
        header = cli_bridge.sign_request(SECRET, BODY, now=float("nan"))
    else:
        parts = header.split(" ")
        header = " ".join([parts[0], parts[1], "not-a-nonce", parts[3]])
    with pytest.raises(BridgeAuthError):
        cli_bridge.verify_request(secret, header, body, now=now)


def test_the_answer_proof_binds_the_nonce_and_the_body():
    proof = cli_bridge.sign_response(SECRET, "ab" * 16, b'{"hits": []}')
    assert cli_bridge.verify_response(SECRET, "ab" * 16, b'{"hits": []}', proof)
    assert not cli_bridge.verify_response(SECRET, "cd" * 16, b'{"hits": []}', proof)
    assert not cli_bridge.verify_response(SECRET, "ab" * 16, b'{"hits": [1]}', proof)
    assert not cli_bridge.verify_response(bytes(32), "ab" * 16, b'{"hits": []}', proof)
    assert not cli_bridge.verify_response(SECRET, "ab" * 16, b'{"hits": []}', None)


def test_a_nonce_is_accepted_once_and_forgotten_after_the_window():
    window = NonceWindow()
    assert window.first_use("a" * 32, now=1000.0)
    assert not window.first_use("a" * 32, now=1001.0)
    assert window.first_use("b" * 32, now=1001.0)
    later = 1000.0 + 2 * cli_bridge.MAX_SKEW_S + 1  # the old nonce's signature has expired by then too
    assert window.first_use("c" * 32, now=later)
    assert window.first_use("a" * 32, now=later + 1)


def test_a_full_window_refuses_rather_than_forgets():
    window = NonceWindow(limit=2)
    assert window.first_use("a" * 32, now=1000.0) and window.first_use("b" * 32, now=1000.0)
    assert not window.first_use("c" * 32, now=1001.0)


def test_the_bridge_file_is_private_and_round_trips(tmp_path):
    old = os.umask(0)  # a permissive umask does not widen it
    try:
        path = cli_bridge.write_bridge(tmp_path, bridge())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert cli_bridge.read_bridge(tmp_path) == bridge()
    assert [p.name for p in tmp_path.iterdir()] == [cli_bridge.BRIDGE_FILE]  # no temporary file left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602])
def test_a_bridge_file_others_may_read_or_write_is_not_used(tmp_path, mode):
    path = cli_bridge.write_bridge(tmp_path, bridge())
    path.chmod(mode)
    assert cli_bridge.read_bridge(tmp_path) is None


def test_a_symlinked_or_garbled_bridge_file_is_not_used(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli_bridge.write_bridge(elsewhere, bridge())
    data = tmp_path / "data"
    data.mkdir()
    (data / cli_bridge.BRIDGE_FILE).symlink_to(elsewhere / cli_bridge.BRIDGE_FILE)
    assert cli_bridge.read_bridge(data) is None
    (data / cli_bridge.BRIDGE_FILE).unlink()
    for text in ("not json", '{"url": "http://x"}', bridge(secret=b"short").to_json(),
                 bridge(url="https://elsewhere.example").to_json()):
        fd = os.open(data / cli_bridge.BRIDGE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, text.encode())
        os.close(fd)
        assert cli_bridge.read_bridge(data) is None


def test_a_server_removes_only_its_own_bridge_file(tmp_path):
    mine = bridge()
    cli_bridge.write_bridge(tmp_path, bridge(secret=bytes(32)))  # another server took over
    cli_bridge.remove_bridge(tmp_path, mine)
    assert cli_bridge.read_bridge(tmp_path) is not None
    cli_bridge.write_bridge(tmp_path, mine)
    cli_bridge.remove_bridge(tmp_path, mine)
    assert cli_bridge.read_bridge(tmp_path) is None


def test_the_config_digest_follows_the_file_and_the_overrides(tmp_path):
    (tmp_path / "bastion.toml").write_text("[search]\nk = 10\n")
    base = cli_bridge.config_digest(tmp_path, {})
    assert cli_bridge.config_digest(tmp_path, {"BASTION_HOME": "/elsewhere", "PATH": "/bin"}) == base
    assert cli_bridge.config_digest(tmp_path, {"BASTION_SEARCH__K": "5"}) != base
    (tmp_path / "bastion.toml").write_text("[search]\nk = 5\n")
    assert cli_bridge.config_digest(tmp_path, {}) != base


def test_process_alive():
    assert cli_bridge.process_alive(os.getpid())
    assert not cli_bridge.process_alive(2**22 + 12345)  # above the kernel's pid_max
