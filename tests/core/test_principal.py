"""Principals and ACL strings."""
import pytest

from bastion.core.errors import AccessError
from bastion.core.types import Principal, parse_acl


def test_acl_parsing():
    assert parse_acl("group:finance, user:alice\n# comment\neveryone") == {"group:finance", "user:alice", "everyone"}
    assert parse_acl("") == frozenset() and parse_acl(None) == frozenset()


@pytest.mark.parametrize("bad", ["finance", "group:", "user:a b", "admin:root", "*"])
def test_malformed_principal_is_rejected(bad):
    with pytest.raises(AccessError, match="invalid principal"):
        parse_acl(bad)


def test_empty_acl_admits_nobody_and_matching_label_admits():
    alice = Principal("alice", frozenset({"finance"}))
    assert not alice.can_read(frozenset())
    assert alice.can_read({"group:finance"}) and alice.can_read({"user:alice"}) and alice.can_read({"everyone"})
    assert not Principal("bob", frozenset({"staff"})).can_read({"group:finance", "user:alice"})
