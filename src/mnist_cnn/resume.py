"""Run folders: a new one per run, or an interrupted run's own when it is resumed."""

import itertools
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
# Settings that say where to resume from; the resumed run's own config says everything else.
RESUME_KEYS = ("ckpt_path", "resume")


class ResumeError(ValueError):
    """There is no run to resume where the settings point."""


def new_run_dir(parent: str) -> str:
    """A new folder named by the current time; a second run started in the same second gets `_1`."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    Path(parent).mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count():
        candidate = Path(parent) / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            candidate.mkdir()  # atomic: exactly one process creates it
            return str(candidate)
        except FileExistsError:
            continue


def run_dir_for(log_dir: str, ckpt_path: str | None, resume: str | None) -> str:
    """The folder a single run writes into: the folder of the run it resumes, or a new one."""
    if resume not in (None, "latest"):
        raise ResumeError(f"resume={resume} is not an option: use resume=latest, "
                          f"or ckpt_path=<run folder>/{CHECKPOINTS}/{LAST_CHECKPOINT}")
    if resume == "latest":
        return str(latest_run(Path(log_dir) / "runs"))
    if ckpt_path:
        return str(run_of_checkpoint(Path(ckpt_path)))
    return new_run_dir(str(Path(log_dir) / "runs"))


def snapshot_subdir(ckpt_path: str | None, resume: str | None) -> str:
    """Where Hydra writes its config snapshot; a resumed run keeps the original `.hydra/config.yaml`."""
    if ckpt_path or resume:
        return f".hydra/resumed_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    return ".hydra"


def latest_run(runs_dir: Path) -> Path:
    checkpoints = sorted(runs_dir.glob(f"*/{CHECKPOINTS}/{LAST_CHECKPOINT}"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        raise ResumeError(f"resume=latest: no run under {runs_dir} has {CHECKPOINTS}/{LAST_CHECKPOINT} to resume from")
    return checkpoints[-1].parent.parent


def run_of_checkpoint(ckpt_path: Path) -> Path:
    ckpt_path = ckpt_path.resolve()
    if not ckpt_path.is_file():
        raise ResumeError(f"ckpt_path={ckpt_path} does not exist")
    run_dir = ckpt_path.parent.parent
    if ckpt_path.parent.name != CHECKPOINTS or not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ResumeError(
            f"ckpt_path={ckpt_path}: training resumes only from a checkpoint inside a run folder "
            f"(<run>/{CHECKPOINTS}/{LAST_CHECKPOINT}), continuing that run's config; "
            "to evaluate a checkpoint on the test set, use eval.py"
        )
    return run_dir


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint this run continues from: the one named by ckpt_path, else the run folder's
    own last.ckpt (there after resume=latest, or when a cluster requeues a preempted job)."""
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path).resolve()
    last = run_dir / CHECKPOINTS / LAST_CHECKPOINT
    return last if last.is_file() else None


def resumed_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's original config, with the key=value overrides given now (e.g. trainer.max_epochs=10).

    Config group choices (e.g. `data=tiny`) must match the run's own: a resumed run
    keeps its data, model and optimizer.
    """
    snapshot = run_dir / ".hydra"
    original = OmegaConf.load(snapshot / "config.yaml")
    groups = OmegaConf.load(snapshot / "hydra.yaml").hydra.runtime.choices
    changes = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in RESUME_KEYS:
            continue
        if key in groups:
            if value != groups[key]:
                raise ResumeError(f"{override}: the resumed run uses {key}={groups[key]}, and keeps it")
            continue
        changes.append(override)
    try:
        return OmegaConf.merge(original, OmegaConf.from_dotlist(changes))
    except Exception as error:
        raise ResumeError(f"cannot apply {changes} to the resumed run: {error}") from error


def steps_done(ckpt_path: Path) -> int:
    """The optimizer steps a checkpoint has taken: where its run's logs continue."""
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)["global_step"]
