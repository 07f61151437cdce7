"""Opens the study's storage, from a SQLAlchemy URL or a `_target_` node (journal file)."""

import time
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

SQLITE_PREFIX = "sqlite:///"


def open_storage(spec: Any, attempts: int = 3) -> optuna.storages.BaseStorage:
    """The storage `spec` describes; a SQLite file's folder is created first, and a plain
    `postgresql://` URL is opened with psycopg (3)."""
    if isinstance(spec, optuna.storages.BaseStorage):  # built by Hydra already
        return spec
    if not isinstance(spec, str):
        return instantiate(spec)
    engine_kwargs = {}
    if spec.startswith(SQLITE_PREFIX):
        Path(spec.removeprefix(SQLITE_PREFIX)).parent.mkdir(parents=True, exist_ok=True)
        # Parallel workers write to one file: wait for its lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    url = make_url(spec)
    if url.drivername == "postgresql":
        # SQLAlchemy before 2.1 opens a plain postgresql:// with psycopg2; the cluster extra installs psycopg.
        spec = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(spec, engine_kwargs=engine_kwargs)
        except (OperationalError, IntegrityError):
            # Workers starting together on a new database all create its tables and stamp its
            # schema version; the losers fail ("table already exists", or a duplicate version
            # row) and find the database ready when they try again.
            if attempt == attempts - 1:
                raise
            time.sleep(1)
