"""Where the project's configs live, the resolvers they use, and the checks they must pass."""

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.overrides import overrides_label
from mnist_cnn.resume import ResumeError, new_run_dir, run_dir_for, snapshot_subdir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


class ConfigError(ValueError):
    """A setting is out of range or of the wrong type; the message names the key and the fix."""


def _run_dir_or_exit(log_dir: str, ckpt_path: str | None, resume: str | None) -> str:
    # Hydra resolves the run folder before the app starts, and would bury this message
    # in a long traceback: say it in one line instead.
    try:
        return run_dir_for(log_dir, ckpt_path, resume)
    except ResumeError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def job_label(mode: RunMode, overrides: Sequence[str]) -> str:
    """A sweep job's TensorBoard run name, from its overrides; empty for a single run,
    whose events stay in the run folder itself (one TensorBoard run per run folder)."""
    return overrides_label(overrides) if mode == RunMode.MULTIRUN else ""


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("job_label", job_label, replace=True)
    # Cached: Hydra resolves its run folder more than once, and the folder is made only once.
    OmegaConf.register_new_resolver("run_dir", _run_dir_or_exit, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("new_run_dir", new_run_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("snapshot_subdir", snapshot_subdir, replace=True, use_cache=True)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# key -> (test, what the key allows)
RULES = {
    "seed": (_is_integer, "an integer"),
    "optimizer.lr": (lambda v: _is_number(v) and v > 0, "a number > 0, e.g. 0.001"),
    "optimizer.weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "data.batch_size": (lambda v: _is_integer(v) and v >= 1, "an integer >= 1, e.g. 128"),
    "data.val_size": (lambda v: _is_integer(v) and v >= 1, "an integer >= 1, e.g. 5000"),
    "data.num_workers": (lambda v: _is_integer(v) and v >= 0, "an integer >= 0"),
    "trainer.max_epochs": (lambda v: _is_integer(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 for no limit"),
    "threads": (lambda v: v is None or (_is_integer(v) and v >= 1), "an integer >= 1, or null for the cores / parallel jobs"),
    "reuse_freed_memory": (lambda v: isinstance(v, bool), "true or false"),
}


def check_config(cfg: DictConfig) -> None:
    """Reject bad settings before any work is done, naming the key and what it allows."""
    for key, (is_allowed, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key)
        if not is_allowed(value):
            raise ConfigError(f"{key}={value!r} is not allowed: it must be {allowed}")
    try:
        instantiate(cfg.model)  # the model checks its own settings; building it is cheap
    except InstantiationException as error:
        raise ConfigError(str(error.__cause__ or error)) from error
