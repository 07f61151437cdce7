"""How an app runs on a checkout's configs, the resolvers they use, and the checks they must pass."""

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.classifier import RUN_LENGTH_ARGUMENT
from mnist_cnn.overrides import keys_swept_by, overrides_label
from mnist_cnn.resume import (
    ResumeError,
    completed_run_metrics,
    new_run_dir,
    nothing_to_resume,
    run_dir_for,
    snapshot_subdir,
)


# The checkout whose script the user ran: its logs/ and data/ go with its configs. run_app
# knows it before Hydra composes anything, and the environment carries it to every process a
# run starts (joblib and submitit workers, DDP ranks). HydraConfig cannot: Hydra resolves a
# sweep's folder before it sets HydraConfig (Hydra issue #1786).
PROJECT_ROOT_VARIABLE = "MNIST_CNN_PROJECT_ROOT"


class ConfigError(ValueError):
    """A setting is out of range or of the wrong type; the message names the key and the fix."""


def _run_dir_or_exit(log_dir: str, ckpt_path: str | None, resume: str | None) -> str:
    # Hydra resolves the run folder before the app starts, and would bury this message
    # in a long traceback: say it in one line instead.
    try:
        run_dir = run_dir_for(log_dir, ckpt_path, resume)
    except ResumeError as error:
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    # Resuming a finished run would test its last weights again and overwrite its results.
    if (ckpt_path or resume) and (metrics := completed_run_metrics(Path(run_dir))):
        print(nothing_to_resume(Path(run_dir), metrics))
        raise SystemExit(0)
    return run_dir


def run_app(task: Callable[[DictConfig], Any], config_dir: Path, config_name: str) -> Any:
    """Run `task` as a Hydra app on `config_name` from `config_dir`: the conf/ folder of the
    checkout whose script the user ran, wherever the package itself is installed."""
    os.environ[PROJECT_ROOT_VARIABLE] = str(config_dir.resolve().parent)
    return hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(task)()


def project_root() -> str:
    """The checkout whose conf/ this run was composed from, as run_app recorded it."""
    try:
        return os.environ[PROJECT_ROOT_VARIABLE]
    except KeyError:
        raise ConfigError(f"{PROJECT_ROOT_VARIABLE} is not set: start runs through a checkout's train.py "
                          "or eval.py, or set log_dir and data.data_dir") from None


def job_label() -> str:
    """A sweep job's TensorBoard run name: its values of the keys the sweep varies (the settings
    all jobs share are in the sweep's summary); empty for a single run, whose events stay in
    the run folder itself (one TensorBoard run per run folder)."""
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return ""
    # Hydra's sweeper saves the sweep's command line there before it launches a job.
    sweep_config = Path(hydra_config.sweep.dir) / "multirun.yaml"
    command_line = OmegaConf.load(sweep_config).hydra.overrides.task if sweep_config.exists() else []
    return overrides_label(hydra_config.overrides.task, keys_swept_by(command_line, hydra_config.sweeper.get("params")))


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("job_label", job_label, replace=True)
    # Cached: Hydra resolves its run folder more than once, and the folder is made only once.
    OmegaConf.register_new_resolver("run_dir", _run_dir_or_exit, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("new_run_dir", new_run_dir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("snapshot_subdir", snapshot_subdir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("len", len, replace=True)


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
    "trainer.use_distributed_sampler": (
        lambda v: v is False,
        "false: MNISTDataModule deals each rank its own batches, which Lightning's sampler would split again"),
}


def check_config(cfg: DictConfig) -> None:
    """Reject bad settings before any work is done, naming the key and what it allows."""
    for key, (is_allowed, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key)
        if not is_allowed(value):
            raise ConfigError(f"{key}={value!r} is not allowed: it must be {allowed}")
    check_run_length(cfg)
    try:
        instantiate(cfg.model)  # the model checks its own settings; building it is cheap
    except InstantiationException as error:
        raise ConfigError(str(error.__cause__ or error)) from error


def check_run_length(cfg: DictConfig) -> None:
    """A schedule that spans the run (cosine, one-cycle) needs the run to end."""
    scheduler = OmegaConf.select(cfg, "scheduler._target_")
    no_step_limit = OmegaConf.select(cfg, "trainer.max_steps", default=-1) in (-1, None)
    if scheduler in RUN_LENGTH_ARGUMENT and cfg.trainer.max_epochs == -1 and no_step_limit:
        raise ConfigError(f"trainer.max_epochs=-1 (no limit) gives {scheduler.rsplit('.', 1)[-1]} no run length "
                          "to span: set trainer.max_epochs or +trainer.max_steps, or use scheduler=none")
