"""Sharded deployments: a PL/Proxy front database routing the SQL API to partition databases.

docs/sharding.md describes the layout. `front` builds and maps the front database, `fanout` applies
operator configuration to every shard in one two-phase commit and finds drift.
"""

from __future__ import annotations


class ShardError(RuntimeError):
    """A sharded deployment cannot do what was asked; nothing was changed."""
