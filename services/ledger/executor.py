"""What the ledger's functions take to run their statements: a pool, or a connection in a transaction."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Executor = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
"""Anything that runs a query: a pool, or a connection inside a transaction."""
