"""Create the database and apply db/migrations with yoyo (recorded, in order, locked)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql
from yoyo import get_backend, read_migrations


def ensure_database(server_url: str, database: str) -> str:
    """Create `database` on the server if missing; return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return psycopg.conninfo.make_conninfo(server_url, dbname=database)


def yoyo_url(database_url: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    user = params.get("user", "")
    password = f":{params['password']}" if params.get("password") else ""
    host = params.get("host", "127.0.0.1")
    port = params.get("port", 5432)
    return f"postgresql+psycopg://{user}{password}@{host}:{port}/{params.get('dbname', '')}"


def apply(database_url: str, migrations: Path) -> list[str]:
    """Apply what is not applied yet; return the ids applied now."""
    backend = get_backend(yoyo_url(database_url))
    pending = backend.to_apply(read_migrations(str(migrations)))
    with backend.lock():
        backend.apply_migrations(pending)
    return [m.id for m in pending]
