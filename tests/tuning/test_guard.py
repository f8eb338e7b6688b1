"""The audience rule: which documents a tuning run may learn from, and who may use the result."""
from __future__ import annotations

import pytest

from bastion.core.errors import ConfigError
from bastion.core.types import Principal
from bastion.tuning.guard import admits, document_admitted, example_admitted, parse_audience, search_principal

FIN, HR, ALICE, EVERYONE = "group:finance", "group:hr", "user:alice", "everyone"


@pytest.mark.parametrize(("acl", "audience", "admitted"), [
    # open documents: every audience
    ([EVERYONE], [FIN], True),
    ([EVERYONE], [EVERYONE], True),
    ([EVERYONE, HR], [FIN, ALICE], True),
    # one group
    ([FIN], [FIN], True),
    ([FIN, HR], [FIN], True),
    ([HR], [FIN], False),
    ([FIN], [HR], False),
    # an audience of several labels: the document must name every one of them
    ([FIN], [FIN, HR], False),
    ([FIN, HR], [FIN, HR], True),
    ([FIN, ALICE], [FIN, ALICE], True),
    ([FIN], [FIN, ALICE], False),
    # users
    ([ALICE], [ALICE], True),
    ([ALICE], [FIN], False),
    (["user:bob"], [ALICE], False),
    # everyone as the audience: only documents open to everyone
    ([FIN], [EVERYONE], False),
    ([FIN, HR, ALICE], [EVERYONE], False),
    # nobody / nothing
    ([], [FIN], False),
    ([], [EVERYONE], False),
    ([EVERYONE], [], False),
])
def test_document_admitted_truth_table(acl, audience, admitted):
    assert document_admitted(acl, audience) is admitted
    assert document_admitted(frozenset(acl), tuple(audience)) is admitted


def test_example_admitted_needs_every_document():
    ex = {"documents": [{"acl": [EVERYONE]}, {"acl": [FIN]}]}
    assert example_admitted(ex, [FIN])
    assert not example_admitted(ex, [HR])
    assert not example_admitted(ex, [EVERYONE])
    assert not example_admitted({"documents": [{"acl": None}]}, [FIN])
    assert example_admitted({"documents": []}, [FIN])  # a user's file: the caller decides, not the guard


def test_parse_audience_validates_and_normalises():
    assert parse_audience("group:hr, group:finance,group:hr") == [FIN, HR]
    assert parse_audience([ALICE, " everyone "]) == [EVERYONE, ALICE]
    for bad in ("", " , ", [], ["admins"], "group:", "user:a b"):
        with pytest.raises(ConfigError):
            parse_audience(bad)


def test_admits_is_the_serving_rule():
    alice = Principal("alice", frozenset({"finance"}))
    bob = Principal("bob", frozenset({"staff"}))
    assert admits([FIN], alice) and not admits([FIN], bob)
    assert admits([EVERYONE], bob)
    assert admits([FIN, "user:bob"], bob)
    assert not admits([], alice)


def test_search_principal_sees_every_admitted_document():
    for audience in ([FIN], [FIN, HR], [ALICE], [FIN, ALICE], [EVERYONE]):
        p = search_principal(audience)
        for acl in ([EVERYONE], [FIN], [FIN, HR], [ALICE], [FIN, ALICE], [FIN, HR, ALICE]):
            if document_admitted(acl, audience):
                assert p.can_read(acl), (audience, acl)
