"""The security suite: one module per finding of the security review, each pairing the attack
(which must fail) with a positive control (the owner still gets what is theirs)."""
from tests.connectors.test_sql import db, ws  # noqa: F401  (the SQL sources' fixtures: real servers and a SQLite file)
from tests.server.conftest import auth, client, free_port, live, served  # noqa: F401  (fixtures shared with tests/server)
