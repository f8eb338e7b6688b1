"""Users and groups that come from elsewhere (a directory, SCIM, SSO): origin, and disabling."""
from datetime import timedelta

import pytest
from sqlalchemy import text

from bastion.catalog.db import Catalog
from bastion.catalog.models import UserRow
from bastion.core.errors import AccessError
from bastion.directory import Directory


def test_upgrading_from_0008_keeps_users_groups_and_memberships(catalog_url):
    cat = Catalog.open(catalog_url, migrate=False)
    cat.migrate("0008")
    with cat.engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, created_at) VALUES ('alice', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO groups (name, created_at) VALUES ('finance', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO memberships (user_id, group_name) VALUES ('alice', 'finance')"))
    cat.migrate()
    assert Directory(cat).principal("alice").groups == {"finance"}
    with cat.session() as s:
        row = s.get(UserRow, "alice")
        assert (row.origin, row.active, row.external_id) == ("local", True, None)


def test_a_disabled_user_loses_sessions_and_keys_and_comes_back_when_enabled(catalog_url):
    d = Directory(Catalog.open(catalog_url))
    d.add_user("alice", groups=["finance"])
    d.add_user("bob", groups=["finance"])
    token, _ = d.accounts.create_session("alice", timedelta(hours=1))
    key_id, key = d.accounts.create_key("alice")
    d.set_active("alice", False)
    assert d.accounts.session(token) is None  # the session ended at once
    with pytest.raises(AccessError, match="disabled"):
        d.principal("alice")  # every request resolves the principal: a key of alice's stops working
    assert not d.is_active("alice")
    assert d.principal("bob").groups == {"finance"}  # others unaffected
    assert [p.user_id for p in d.users(include_disabled=False)] == ["bob"]
    assert {p.user_id for p in d.users()} == {"alice", "bob"}
    d.set_active("alice", True)
    assert d.principal("alice").groups == {"finance"}
    assert d.accounts.authenticate_key(key) is not None  # the key itself was never revoked
    with pytest.raises(AccessError, match="unknown user"):
        d.set_active("nobody", False)


def test_a_catalog_written_by_a_newer_bastion_is_refused_with_what_to_do(catalog_url):
    from bastion.core.errors import CatalogError

    cat = Catalog.open(catalog_url)
    with cat.engine.begin() as conn:  # as a later version would leave it
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(CatalogError, match=r"revision 0099, written by a newer Bastion.*restore the backup"):
        cat.migrate()
    with cat.engine.begin() as conn:  # positive control: at this Bastion's head revision it opens
        conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": cat.head_revision()})
    Directory(Catalog.open(catalog_url)).add_user("alice")
