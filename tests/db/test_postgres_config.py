"""database.postgres keys as Headscale means them, against a real server: `pass`, a password that needs
URL-escaping, a unix-socket directory as `host`, and `ssl: false`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pyheadscale.config import build_config
from pyheadscale.config_database import PostgresConfig
from pyheadscale.db.database import Database

ODD_PASSWORD = "p@ss:w/rd?#%& 'x"


def postgres_section(postgres: dict[str, object], **keys: Any) -> PostgresConfig:
    base = {k: v for k, v in postgres.items() if k != "password"}
    raw = {"database": {"type": "postgres", "postgres": base | keys}}
    return build_config(raw, data_dir=Path("/tmp/unused")).database.postgres


async def select_one(pg: PostgresConfig) -> Any:
    engine = create_async_engine(pg.url().render_as_string(hide_password=False), **pg.engine_options())
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT current_user"))).scalar()
    finally:
        await engine.dispose()


async def test_pass_key_and_a_password_that_needs_escaping(postgres: dict[str, object]) -> None:
    for ssl in (False, True):  # true keeps libpq's default (prefer): this test server has no TLS, so plain
        section = postgres_section(postgres, **{"pass": postgres["password"], "ssl": ssl})
        assert await select_one(section) == "headscale"
    admin = create_async_engine(postgres_section(postgres, **{"pass": postgres["password"]}).url())
    try:
        async with admin.begin() as conn:
            await conn.execute(text("DROP ROLE IF EXISTS odd"))
            quoted = ODD_PASSWORD.replace("'", "''")
            await conn.execute(text(f"CREATE ROLE odd LOGIN PASSWORD '{quoted}'"))
        odd = postgres_section(postgres, user="odd", **{"pass": ODD_PASSWORD})
        assert await select_one(odd) == "odd"
    finally:
        async with admin.begin() as conn:
            await conn.execute(text("DROP ROLE IF EXISTS odd"))
        await admin.dispose()


async def test_unix_socket_directory_as_host(postgres: dict[str, object]) -> None:
    tcp = postgres_section(postgres, **{"pass": postgres["password"]})
    engine = create_async_engine(tcp.url())
    try:
        async with engine.connect() as conn:
            directory = str((await conn.execute(text("SHOW unix_socket_directories"))).scalar()).split(",")[0]
    finally:
        await engine.dispose()
    over_socket = postgres_section(postgres, host=directory.strip(), **{"pass": postgres["password"]})
    assert over_socket.url().host is None
    assert await select_one(over_socket) == "headscale"


async def test_database_opens_with_the_pass_key(postgres: dict[str, object], tmp_path: Path) -> None:
    raw = {
        "database": {"type": "postgres", "postgres": {k: v for k, v in postgres.items() if k != "password"}}
    }
    raw["database"]["postgres"]["pass"] = postgres["password"]  # type: ignore[index]
    database = await Database.open(build_config(raw, data_dir=tmp_path))
    await database.close()
