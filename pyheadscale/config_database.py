"""The `database` section of the configuration: SQLite or PostgreSQL, with Headscale's keys and meanings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import URL

from pyheadscale.config_section import Section


class SqliteConfig(Section):
    path: str = "db.sqlite"
    write_ahead_log: bool = True
    wal_autocheckpoint: int = 1000


_PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class PostgresConfig(Section):
    """Headscale's PostgreSQL keys. `host` may be a unix-socket directory (starting with "/"), as in libpq."""

    host: str = "localhost"
    port: int = 5432
    name: str = "headscale"
    user: str = "headscale"
    pass_: SecretStr = Field(SecretStr(""), alias="pass")
    # pyheadscale's earlier spelling of `pass`, still read when `pass` is empty.
    password: SecretStr = SecretStr("")
    # true/false (libpq's default mode / no TLS), or a libpq sslmode name.
    ssl: str = "false"
    max_open_conns: int = 10
    max_idle_conns: int = 10
    conn_max_idle_time_secs: int = 3600

    @field_validator("ssl", mode="before")
    @classmethod
    def _ssl(cls, value: Any) -> str:
        text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if text in ("1", "t", "true", "0", "f", "false") or text in _PG_SSLMODES:
            return text
        raise ValueError(f"{value!r} is not true, false or a PostgreSQL sslmode ({', '.join(_PG_SSLMODES)})")

    @field_validator("max_open_conns", "max_idle_conns", "conn_max_idle_time_secs")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value

    @property
    def sslmode(self) -> str:
        """The libpq sslmode Headscale's DSN ends up with: false disables TLS, true keeps the default."""
        if self.ssl in ("0", "f", "false"):
            return "disable"
        if self.ssl in ("1", "t", "true"):
            return "prefer"
        return self.ssl

    def url(self) -> URL:
        """The SQLAlchemy (asyncpg) URL; the password is escaped by URL rendering, whatever it contains."""
        secret = self.pass_.get_secret_value() or self.password.get_secret_value()
        query = {"ssl": self.sslmode}
        if self.host.startswith("/"):
            return URL.create(
                "postgresql+asyncpg",
                username=self.user,
                password=secret or None,
                database=self.name,
                query=query | {"host": self.host, "port": str(self.port)},
            )
        return URL.create(
            "postgresql+asyncpg",
            username=self.user,
            password=secret or None,
            host=self.host,
            port=self.port,
            database=self.name,
            query=query,
        )

    def engine_options(self) -> dict[str, Any]:
        """Pool settings as Go's database/sql applies them: at most max_open_conns connections, of which
        max_idle_conns are kept, each recycled after conn_max_idle_time_secs."""
        open_conns = self.max_open_conns or 100  # Go's 0 means unlimited; keep a bound
        idle = min(self.max_idle_conns, open_conns) or 1
        return {
            "pool_size": idle,
            "max_overflow": max(open_conns - idle, 0),
            "pool_recycle": self.conn_max_idle_time_secs or -1,
        }


class DatabaseConfig(Section):
    type: Literal["sqlite", "sqlite3", "postgres"] = "sqlite"
    sqlite: SqliteConfig = SqliteConfig()
    postgres: PostgresConfig = PostgresConfig.model_validate({})


__all__ = ["DatabaseConfig", "PostgresConfig", "SqliteConfig"]
