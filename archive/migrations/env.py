"""Alembic's environment for the catalog database.

Two callers. The archive (``archive.migrations.upgrade``) passes the connection it has
locked in ``config.attributes["connection"]`` and needs no target metadata: revision
scripts are self-contained. A developer runs the ``alembic`` command line from the
repository (alembic.ini): the database is ``-x url=...`` or the ini's ``sqlalchemy.url``,
and autogenerate compares it with the tables named by the ini's ``vna_target_metadata``.
"""

from __future__ import annotations

import importlib
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

config = context.config


def _target_metadata() -> Any:
    given = config.attributes.get("target_metadata")
    if given is not None:
        return given
    # "module:function", configuration rather than an import: archive may not import
    # sharing, whose tables autogenerate must see too
    dotted = config.get_main_option("vna_target_metadata")
    if not dotted:
        return None
    module, _, function = dotted.partition(":")
    return getattr(importlib.import_module(module), function)()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or config.get_main_option("sqlalchemy.url") or ""


def _run(connection: Connection, *, external: bool) -> None:
    options: dict[str, Any] = {}
    on_version_apply = config.attributes.get("on_version_apply")
    if on_version_apply is not None:
        options["on_version_apply"] = on_version_apply
    if external and connection.dialect.name == "sqlite":
        # archive.migrations began the transaction itself (BEGIN IMMEDIATE), and SQLite
        # rolls DDL back like anything else: tell alembic so
        options["transactional_ddl"] = True
    context.configure(
        connection=connection,
        target_metadata=_target_metadata(),
        # SQLite alters little in place: batch operations copy the table instead
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        **options,
    )
    # inside the caller's transaction when it passed one (the whole upgrade is atomic)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():  # `alembic upgrade head --sql`: the SQL for review
    context.configure(url=_url(), literal_binds=True, target_metadata=_target_metadata())
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    _run(given, external=True)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    engine = create_engine(_url(), poolclass=NullPool)
    with engine.connect() as conn:
        _run(conn, external=False)
        conn.commit()
    engine.dispose()
