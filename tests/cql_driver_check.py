"""Runs the official DataStax Python driver (`cassandra-driver` on PyPI)
against Wharf's fake CQL server, to show that the stand-in the cassandra
plugin is tested against speaks CQL v4 as real clients expect.

    python3 tests/cql_driver_check.py <host> <port>

Connects (control connection: system.local, system.peers), prepares an
INSERT into app.users, executes it, then SELECTs the row back twice (a
prepared SELECT ... WHERE id = ? and a plain SELECT * query) and prints it
as one JSON line: `selected {"id": ..., "name": ..., "age": ...}`.
Exit 0 on success; any error is raised (non-zero exit).
Run by tests/tests/cassandra.rs; install the driver with `make test-deps`.
"""

import json
import sys

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster
from cassandra.policies import DCAwareRoundRobinPolicy
from cassandra.query import dict_factory


def main(host: str, port: int) -> None:
    cluster = Cluster(
        [host],
        port=port,
        protocol_version=4,
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="datacenter1"),
        connect_timeout=10,
        control_connection_timeout=10,
    )
    try:
        session = cluster.connect()
        session.row_factory = dict_factory
        session.default_timeout = 10

        insert = session.prepare("INSERT INTO app.users (id, name, age) VALUES (?, ?, ?)")
        insert.consistency_level = ConsistencyLevel.LOCAL_QUORUM
        session.execute(insert, ("py-driver", "Ada Lovelace", 36))

        select = session.prepare("SELECT id, name, age FROM app.users WHERE id = ?")
        rows = list(session.execute(select, ("py-driver",)))
        assert rows == [{"id": "py-driver", "name": "Ada Lovelace", "age": 36}], rows

        everything = list(session.execute("SELECT * FROM app.users"))
        assert [r["id"] for r in everything] == ["py-driver"], everything

        print("selected " + json.dumps(rows[0], sort_keys=True), flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: cql_driver_check.py <host> <port>")
    main(sys.argv[1], int(sys.argv[2]))
