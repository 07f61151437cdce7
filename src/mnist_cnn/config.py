"""How an app runs on a checkout's configs, and the resolvers they use."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.console import exit_with, quiet_library_notices
from mnist_cnn.overrides import keys_swept_by, overrides_label
from mnist_cnn.resume import (
    ResumeError,
    completed_run_metrics,
    new_run_dir,
    nothing_to_resume,
    run_dir_for,
    snapshot_subdir,
)
from mnist_cnn.schema import ConfigError
from mnist_cnn.slurm import cpus_per_task, gpus_per_node

# The checkout whose script the user ran: its logs/ and data/ go with its configs. run_app
# knows it before Hydra composes anything, and the environment carries it to every process a
# run starts (joblib and submitit workers, DDP ranks). HydraConfig cannot: Hydra resolves a
# sweep's folder before it sets HydraConfig (Hydra issue #1786).
PROJECT_ROOT_VARIABLE = "MNIST_CNN_PROJECT_ROOT"
# Where a sweeper saves the sweep's config, whose command line names its jobs.
SWEEP_CONFIG = "multirun.yaml"


# Hydra resolves the run folder before the app starts, and would bury these messages in a
# long traceback: the two resolvers say them in one line instead.
def _run_dir_or_exit(log_dir: str, ckpt_path: str | None, resume: str | None) -> str:
    try:
        run_dir = run_dir_for(log_dir, ckpt_path, resume)
    except ResumeError as error:
        exit_with(str(error))
    except OSError as error:
        exit_with(_unwritable(error))
    # Resuming a finished run would test its last weights again and overwrite its results.
    if (ckpt_path or resume) and (metrics := completed_run_metrics(Path(run_dir))):
        print(nothing_to_resume(Path(run_dir), metrics))
        raise SystemExit(0)
    return run_dir


# The new folders this process made, so that an app that fails before writing into one (a
# launcher that cannot start its jobs, say) does not leave it behind, empty but for the
# sweep's config.
_made_folders: list[Path] = []


def _new_run_dir_or_exit(parent: str) -> str:
    try:
        folder = new_run_dir(parent)
    except OSError as error:
        exit_with(_unwritable(error))
    _made_folders.append(Path(folder))
    return folder


def _sweep_dir_or_exit(log_dir: str, study_name: str | None) -> str:
    """An Optuna study's folder, the same on every rerun (the study grows in it); else a new
    folder per sweep. One resolver for both: a preset that overrode an interpolation with a
    side effect would have it run anyway (OmegaConf resolves a node it merges onto)."""
    if study_name is not None:
        return f"{log_dir}/optuna/{study_name}"
    return _new_run_dir_or_exit(f"{log_dir}/multiruns")


def _unwritable(error: OSError) -> str:
    return f"cannot create the folder {error.filename} ({error.strerror}): set log_dir=<a folder you can write to>"


def run_app(task: Callable[[DictConfig], Any], config_dir: Path, config_name: str) -> Any:
    """Run `task` as a Hydra app on `config_name` from `config_dir`: the conf/ folder of the
    checkout whose script the user ran, wherever the package itself is installed."""
    record_project_root(config_dir)
    quiet_library_notices()  # also those of composing the config
    try:
        return hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(task)()
    finally:
        for folder in _made_folders:
            if folder.is_dir() and {path.name for path in folder.iterdir()} <= {SWEEP_CONFIG}:
                (folder / SWEEP_CONFIG).unlink(missing_ok=True)
                folder.rmdir()


def record_project_root(config_dir: Path) -> None:
    """Make the checkout of `config_dir` the project root of this process and those it starts."""
    os.environ[PROJECT_ROOT_VARIABLE] = str(config_dir.resolve().parent)


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
    sweep_config = Path(hydra_config.sweep.dir) / SWEEP_CONFIG
    command_line = OmegaConf.load(sweep_config).hydra.overrides.task if sweep_config.exists() else []
    return overrides_label(hydra_config.overrides.task, keys_swept_by(command_line, hydra_config.sweeper.get("params")))


def run_name() -> str:
    """A tracker's name for this run: a sweep job's label, else the run folder's name."""
    return job_label() or Path(HydraConfig.get().runtime.output_dir).name


def sweep_name_or(default: str | None) -> str | None:
    """The group a tracker files this run under: a sweep's jobs under the sweep's folder
    (multiruns/<date>_<time>, optuna/<study>), a single run under `default`."""
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        return default
    sweep_dir = Path(hydra_config.sweep.dir)
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def wandb_offline() -> bool:
    """W&B keeps a run's files under its run folder (to `wandb sync` later) until the user logs
    in with `wandb login`, which stores the key in ~/.netrc, or sets WANDB_API_KEY."""
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text())


def local_artifacts(tracking_uri: str, folder: str) -> str | None:
    """Where a new MLflow experiment keeps its files: `folder` beside a local database; a
    tracking server keeps them in its own place (null)."""
    return folder if tracking_uri.startswith(("sqlite:", "file:")) else None


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("job_label", job_label, replace=True)
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("sweep_name_or", sweep_name_or, replace=True)
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("local_artifacts", local_artifacts, replace=True)
    # Cached: Hydra resolves its run folder more than once, and the folder is made only once.
    OmegaConf.register_new_resolver("run_dir", _run_dir_or_exit, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("new_run_dir", _new_run_dir_or_exit, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("sweep_dir", _sweep_dir_or_exit, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("snapshot_subdir", snapshot_subdir, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("len", len, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus_per_node", gpus_per_node, replace=True)
    OmegaConf.register_new_resolver("slurm_cpus_per_task", cpus_per_task, replace=True)
