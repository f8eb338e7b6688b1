"""Several processes on one catalog: the PostgreSQL fixtures of the catalog suite."""
from tests.catalog.conftest import catalog_url, pg_url  # noqa: F401  (a fresh database per test, dropped after)
