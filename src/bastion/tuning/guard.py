"""Which documents a tuning run may learn from: the audience rule.

A model's weights remember their training data, and every user of the model can draw it out.
So a tuning run declares its *audience* (principal labels: ``user:U``, ``group:G``,
``everyone``), and its dataset may hold only text that every member of that audience may read.

The rule is *label-wise*: a document whose ACL has labels ``A`` is admitted for audience ``L``
when ``everyone`` is in ``A`` or every label of ``L`` is in ``A``. It never asks the directory
who belongs to a group today, so it stays true when memberships change later: a user who joins
``group:finance`` tomorrow may read every document a ``group:finance`` model learnt from. An
audience of ``everyone`` therefore admits only documents open to everyone, and an audience of
two groups only documents both groups may read. An example is admitted when every document its
text came from is.

Serving uses the other direction: a principal may use a model when one of its labels is an
audience label (:func:`admits`).

>>> document_admitted(["group:finance", "group:hr"], ["group:finance"])
True
>>> document_admitted(["group:finance"], ["group:finance", "group:hr"])
False
>>> document_admitted(["everyone"], ["group:hr"])
True
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bastion.core.errors import AccessError, ConfigError
from bastion.core.types import EVERYONE, Principal, parse_principal

if TYPE_CHECKING:
    from bastion.tuning.data import Example


def document_admitted(acl: Iterable[str], audience: Sequence[str]) -> bool:
    """True when every member of ``audience`` may read a document with these ACL labels.

    An empty audience admits nothing (it would say nothing about who reads the model).

    >>> document_admitted(["user:alice", "group:finance"], ["user:alice"])
    True
    >>> document_admitted(["group:finance"], ["everyone"])
    False
    >>> document_admitted([], ["group:finance"])
    False
    """
    labels = set(acl)
    if not audience:
        return False
    return EVERYONE in labels or all(label in labels for label in audience)


def example_admitted(example: Example | dict[str, Any], audience: Sequence[str]) -> bool:
    """True when every document the example's text came from is admitted for ``audience``.

    An example with no documents (a user's file) is not judged here: it carries no ACL, and
    taking it is the caller's explicit decision (see ``bastion.tuning.data.from_file``).

    >>> example_admitted({"documents": [{"acl": ["everyone"]}, {"acl": ["group:hr"]}]}, ["group:hr"])
    True
    >>> example_admitted({"documents": [{"acl": ["everyone"]}, {"acl": ["group:hr"]}]}, ["everyone"])
    False
    """
    documents = example["documents"] if isinstance(example, dict) else example.documents
    return all(document_admitted(d.get("acl") or [], audience) for d in documents)


def parse_audience(value: str | Iterable[str]) -> list[str]:
    """Validated, de-duplicated, sorted audience labels from ``"a,b"`` text or a list.

    >>> parse_audience("group:finance, user:alice,group:finance")
    ['group:finance', 'user:alice']
    >>> parse_audience("")
    Traceback (most recent call last):
    ...
    bastion.core.errors.ConfigError: the audience is empty: name who may use the model, e.g. group:finance or everyone
    """
    parts = value.split(",") if isinstance(value, str) else list(value)
    labels: set[str] = set()
    for part in parts:
        if not isinstance(part, str):
            raise ConfigError(f"audience label {part!r} must be text")
        if not part.strip():
            continue
        try:
            labels.add(parse_principal(part))
        except AccessError as exc:
            raise ConfigError(f"audience: {exc}") from None
    if not labels:
        raise ConfigError("the audience is empty: name who may use the model, e.g. group:finance or everyone")
    return sorted(labels)


def admits(audience: Sequence[str], principal: Principal) -> bool:
    """True when ``principal`` may use a model tuned for ``audience`` (it matches one label).

    >>> admits(["group:finance"], Principal("alice", frozenset({"finance"})))
    True
    >>> admits(["group:finance"], Principal("bob"))
    False
    """
    return bool(principal.labels() & set(audience))


def search_principal(audience: Sequence[str]) -> Principal:
    """A principal whose searches see at least every document the audience is admitted to.

    Admitted documents are open to everyone or carry every audience label, so the audience's
    groups (and its first user, if any) suffice; without a user label the user id holds a space,
    so no ACL can name it. It may see more than the audience: callers must still drop every hit
    whose document :func:`document_admitted` rejects.

    >>> sorted(search_principal(["group:finance", "user:alice"]).labels())
    ['everyone', 'group:finance', 'user:alice']
    """
    users = sorted(label[5:] for label in audience if label.startswith("user:"))
    groups = frozenset(label[6:] for label in audience if label.startswith("group:"))
    return Principal(user_id=users[0] if users else "tuning audience", groups=groups)


__all__ = ["admits", "document_admitted", "example_admitted", "parse_audience", "search_principal"]
