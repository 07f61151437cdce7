"""Opens the study's storage, from a SQLAlchemy URL or a `_target_` node (journal file)."""

from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate

SQLITE_PREFIX = "sqlite:///"


def open_storage(spec: Any) -> optuna.storages.BaseStorage:
    """The storage `spec` describes; a SQLite file's folder is created first."""
    if isinstance(spec, optuna.storages.BaseStorage):  # built by Hydra already
        return spec
    if not isinstance(spec, str):
        return instantiate(spec)
    if spec.startswith(SQLITE_PREFIX):
        Path(spec.removeprefix(SQLITE_PREFIX)).parent.mkdir(parents=True, exist_ok=True)
        # Parallel workers write to one file: wait for its lock instead of failing at once.
        return optuna.storages.RDBStorage(spec, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(spec)
