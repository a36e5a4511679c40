"""Both databases of a postgres workload as its phases reach them: the source (Azure
Database for PostgreSQL) and the target (Scaleway Managed PostgreSQL), each a way to
open a new DB-API connection plus its libpq parameters.

Building them from Airflow connections is the glue's job; the conninfo, keyword and
SQLAlchemy forms of the parameters are here because the domain hands them on (to the
target's subscription, to psycopg2, to Great Expectations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bascule.postgres.client import LibpqParams

Connect = Callable[[], Any]


@dataclass(frozen=True)
class PgSides:
    """How to reach both databases; each call opens a new connection (the caller closes it).

    The target server's subscription connects to the source with ``source_params`` too:
    the source's host must be reachable from the target server (docs/runbooks.md).
    """

    source: Connect
    target: Connect
    source_params: LibpqParams
    target_params: LibpqParams

    @classmethod
    def connecting(cls, source: LibpqParams, target: LibpqParams) -> PgSides:
        """Sides that open psycopg2 connections with ``source`` and ``target`` as they are."""
        import psycopg2  # imported on use: the glue imports this module while DAGs are parsed

        return cls(
            source=lambda: psycopg2.connect(**connect_kwargs(source)),
            target=lambda: psycopg2.connect(**connect_kwargs(target)),
            source_params=source,
            target_params=target,
        )

    @contextmanager
    def autocommit_source(self) -> Iterator[Any]:
        """A new source connection in autocommit mode, closed on exit."""
        with closing(self.source()) as source:
            source.autocommit = True
            yield source

    @contextmanager
    def autocommit_target(self) -> Iterator[Any]:
        """A new target connection in autocommit mode, closed on exit."""
        with closing(self.target()) as target:
            target.autocommit = True
            yield target

    @contextmanager
    def autocommit_both(self) -> Iterator[tuple[Any, Any]]:
        """New source and target connections in autocommit mode, closed on exit."""
        with closing(self.source()) as source, closing(self.target()) as target:
            source.autocommit = True
            target.autocommit = True
            yield source, target


def conninfo(params: LibpqParams) -> str:
    """A libpq conninfo string (values quoted), e.g. for the target server's subscription."""

    def quote_value(value: object) -> str:
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts = {"host": params.host, "port": params.port, "user": params.user, "password": params.password,
             "dbname": params.dbname}  # fmt: skip
    if params.sslmode:
        parts["sslmode"] = params.sslmode
    return " ".join(f"{key}={quote_value(value)}" for key, value in parts.items())


def connect_kwargs(params: LibpqParams) -> dict[str, Any]:
    """The keyword arguments of ``psycopg2.connect`` for ``params`` (10 s connect timeout)."""
    kwargs: dict[str, Any] = {"host": params.host, "port": params.port, "user": params.user,
                              "password": params.password, "dbname": params.dbname, "connect_timeout": 10}  # fmt: skip
    if params.sslmode:
        kwargs["sslmode"] = params.sslmode
    return kwargs


def sqlalchemy_url(params: LibpqParams) -> str:
    """A SQLAlchemy URL (psycopg2 driver) for ``params``, every part URL-quoted."""
    url = (
        f"postgresql+psycopg2://{quote(params.user, safe='')}:{quote(params.password, safe='')}"
        f"@{params.host}:{params.port}/{quote(params.dbname, safe='')}"
    )
    return url + (f"?sslmode={params.sslmode}" if params.sslmode else "")
