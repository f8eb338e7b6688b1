"""A sign-in response (its OIDC ``state``) is accepted once across every server of a catalog: a
replay to another server is refused as it is on the first one."""
from __future__ import annotations

import pytest

from bastion.catalog.db import Catalog
from bastion.core.config import OidcConfig
from bastion.server.oidc import OidcClient, SsoRefused


def test_a_sign_in_state_used_on_one_server_is_refused_on_another(catalog_url, tmp_path, monkeypatch):
    monkeypatch.setenv("H2_OIDC_STATE_KEY", "k" * 32)
    cfg = OidcConfig(issuer="https://idp.example", client_id="bastion", state_key_env="H2_OIDC_STATE_KEY")
    a, b = (OidcClient(cfg, tmp_path, Catalog.open(catalog_url)) for _ in range(2))
    a._claim_state("state-one")
    with pytest.raises(SsoRefused) as refused:
        b._claim_state("state-one")
    assert refused.value.reason == "replayed"
    b._claim_state("state-two")  # positive control: a fresh sign-in on B
