"""Configuration is strict: a typo fails loudly and names the key."""
import pytest

from bastion.core.config import WorkspaceConfig, load_config
from bastion.core.errors import ConfigError, WorkspaceError
from bastion.testing.fakes import HashEmbedder
from bastion.workspace import Workspace


def test_default_config_round_trips(tmp_path):
    ws = Workspace.init(tmp_path)
    assert ws.config == WorkspaceConfig()


@pytest.mark.parametrize("toml, needle", [
    ("[search]\nkk = 3\n", "unknown key 'search.kk'"),
    ("[serach]\nk = 3\n", "unknown key 'serach'"),
    ("[search]\nk = 'ten'\n", "search.k"),
    ("[chunking]\nmax_tokens = 64\noverlap_tokens = 64\n", "overlap_tokens"),
    ("[embedder]\nbackend = 'openai'\n", "embedder.url"),
    ("[search\nk = 3\n", "not valid TOML"),
    ("[index]\nfragment_rows = 10\n", "index.fragment_rows"),
    ("[index]\nvector_index = 'hnsw'\n", "index.vector_index"),
])
def test_bad_config_names_the_problem(tmp_path, toml, needle):
    (tmp_path / "bastion.toml").write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert needle in str(err.value)


def test_environment_overrides_a_value(tmp_path, monkeypatch):
    (tmp_path / "bastion.toml").write_text("[search]\nk = 5\n")
    monkeypatch.setenv("BASTION_SEARCH__K", "7")
    assert load_config(tmp_path).search.k == 7
    monkeypatch.setenv("BASTION_SEARCH__BOGUS", "1")
    with pytest.raises(ConfigError, match="search.bogus"):
        load_config(tmp_path)


def test_a_bad_environment_override_names_the_variable_not_the_file(tmp_path, monkeypatch):
    (tmp_path / "bastion.toml").write_text("[search]\nk = 5\n")
    monkeypatch.setenv("BASTION_SEARCH__K", "abc")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    message = str(err.value)
    assert message.startswith("environment variable BASTION_SEARCH__K: search.k: ")
    assert message.endswith("(got 'abc')") and "bastion.toml" not in message
    monkeypatch.delenv("BASTION_SEARCH__K")
    monkeypatch.setenv("BASTION_SERACH__K", "3")  # a misspelt section
    with pytest.raises(ConfigError, match=r"^environment variable BASTION_SERACH__K: unknown key 'serach'$"):
        load_config(tmp_path)
    monkeypatch.delenv("BASTION_SERACH__K")
    (tmp_path / "bastion.toml").write_text("[search]\nk = 'ten'\n")  # the file's own mistake is still the file's
    monkeypatch.setenv("BASTION_SEARCH__MODE", "fuzzy")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    file_part, env_part = str(err.value).split("; environment variable ")
    assert file_part.startswith(f"{tmp_path / 'bastion.toml'}: search.k:") and "(got 'ten')" in file_part
    assert env_part.startswith("BASTION_SEARCH__MODE: search.mode:") and "(got 'fuzzy')" in env_part


def test_open_without_workspace_says_how_to_create_one(tmp_path):
    with pytest.raises(WorkspaceError, match="bastion init"):
        Workspace.open(tmp_path / "nowhere")


def test_init_refuses_to_overwrite(tmp_path):
    Workspace.init(tmp_path)
    with pytest.raises(WorkspaceError, match="already"):
        Workspace.init(tmp_path)


def test_index_settings_reach_the_store(tmp_path):
    Workspace.init(tmp_path / "default")
    assert Workspace.open(tmp_path / "default", embedder=HashEmbedder()).store.fragment_rows == 262_144
    (tmp_path / "bastion.toml").write_text("[index]\nfragment_rows = 5000\nann_min_rows = 300\n")
    store = Workspace.open(tmp_path, embedder=HashEmbedder()).store
    assert (store.fragment_rows, store.ann_min_rows) == (5000, 300)
    assert (store.vector_index, store.refine_factor) == ("IVF_SQ", None)  # refine by the index's kind
    (tmp_path / "bastion.toml").write_text("[index]\nvector_index = 'ivf_pq'\n[search]\nrefine_factor = 4\n")
    store = Workspace.open(tmp_path, embedder=HashEmbedder()).store
    assert (store.vector_index, store.refine) == ("IVF_PQ", 4)
