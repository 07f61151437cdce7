"""Run folders: a new one per run, or an interrupted run's own when it is resumed."""

import copy
import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

if TYPE_CHECKING:
    from torch import nn

CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
SNAPSHOT = ".hydra"
# Settings that say where to resume from; the resumed run's own config says everything else.
RESUME_KEYS = ("ckpt_path", "resume")
# The settings a resumed run keeps, by what depends on them. A run that changed one would follow
# neither setting: the checkpoint restores a learning-rate schedule sized from the run's length,
# a position in an epoch's order drawn from its seeds, the optimizer's state with its settings
# (lr, weight_decay, ...), and the best validation score as its checkpoint callback measured it.
KEPT_ON_RESUME = {
    "its learning-rate schedule and data order depend on it": (
        "trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches", "trainer.accumulate_grad_batches",
        "data.batch_size", "trainer.devices", "trainer.num_nodes"),
    "its train/validation split and data order depend on it": ("seed", "data.seed", "data.val_size"),
    "the images it trains on depend on it": ("data.augment", "model.dropout"),
    "the checkpoint restores the optimizer's state and settings": ("optimizer",),
    "the checkpoint restores the learning-rate schedule": ("scheduler",),
    "best.ckpt and val/acc_best record the best score it measures": (
        "callbacks.model_checkpoint.monitor", "callbacks.model_checkpoint.mode"),
    "the checkpoint restores early stopping's count and patience": ("callbacks.early_stopping",),
}


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


def snapshot_subdir(run_dir: str) -> str:
    """Where Hydra writes its config snapshot. A run folder that holds one already (a resumed
    or requeued run) keeps it, the config the run continues; the new one goes beside it."""
    if (Path(run_dir) / SNAPSHOT / "config.yaml").is_file():
        return f"{SNAPSHOT}/resumed_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    return SNAPSHOT


def discard_event_files(run_dir: Path) -> None:
    """A job requeued before its first checkpoint starts over, and so do its TensorBoard logs:
    otherwise its first steps, and its hyperparameters, would appear twice."""
    for events in run_dir.rglob("events.out.tfevents.*"):
        events.unlink()


def completed_run_metrics(run_dir: Path) -> dict | None:
    """The metrics of a run that has finished; None if it has not."""
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return metrics if metrics.get("status") == "completed" else None


def nothing_to_resume(run_dir: Path, metrics: dict) -> str:
    return (f"run {run_dir} is complete (test accuracy {metrics['test/acc']:.2%}): nothing to resume. "
            "To train again, start a new run.")


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
    """The run's original config, with the overrides given now applied as Hydra would apply them.

    Config group choices (e.g. `data=tiny`) must match the run's own, nothing can be removed
    (`~key`), and the settings the checkpoint depends on (KEPT_ON_RESUME) keep their values:
    anything else (e.g. `trainer.enable_progress_bar=false`) applies.
    """
    original = OmegaConf.load(run_dir / SNAPSHOT / "config.yaml")
    choices = OmegaConf.load(run_dir / SNAPSHOT / "hydra.yaml").hydra.runtime.choices
    config = copy.deepcopy(original)
    OmegaConf.set_struct(config, True)  # like Hydra: a new key needs `+`
    for override in OverridesParser.create().parse_overrides(overrides):
        key, line = override.key_or_group, override.input_line
        if key in RESUME_KEYS or key.split("/")[0].split(".")[0] == "hydra":
            continue
        if override.is_delete():
            raise ResumeError(f"{line}: a resumed run keeps every setting it started with; "
                              "to run without it, start a new run")
        if key in choices:
            if override.value() != choices[key]:
                raise ResumeError(f"{line}: the resumed run uses {key}={choices[key]}, and keeps it; "
                                  "for another, start a new run")
            continue
        try:
            OmegaConf.update(config, key, override.value(), merge=True,
                             force_add=override.is_add() or override.is_force_add())
        except OmegaConfBaseException as error:
            reason = str(error).splitlines()[0]  # OmegaConf adds lines of internal detail
            raise ResumeError(f"{line}: cannot apply it to the resumed run ({reason}); "
                              f"to add a key the run does not have, write +{key}=...") from error
    for reason, keys in KEPT_ON_RESUME.items():
        for key in keys:
            started_with, now = OmegaConf.select(original, key), OmegaConf.select(config, key)
            if now != started_with:
                raise ResumeError(
                    f"{changed(key, now, started_with)}: a resumed run keeps the setting it started with ({reason}). "
                    "Resume without this override, or start a new run with the setting you want."
                )
    return config


def changed(key: str, now, started_with) -> str:
    """`optimizer.lr=0.01 (the run was started with 0.001)`, or the keys of a node that differ."""
    if isinstance(now, DictConfig) and isinstance(started_with, DictConfig):
        return ", ".join(changed(f"{key}.{name}", now.get(name), started_with.get(name))
                         for name in sorted(set(now) | set(started_with)) if now.get(name) != started_with.get(name))
    was = f"the run was started with {started_with}" if started_with is not None else "the run was started without it"
    return f"{key}={now} ({was})"


# What a checkpoint needs to continue a run: the weights, the step its logs continue from,
# the loops' position and the optimizer's state.
TRAINING_STATE = ("state_dict", "global_step", "loops", "optimizer_states")


def read_training_state(ckpt_path: Path) -> dict:
    """The checkpoint a run continues from; a ResumeError in one line when it cannot continue one."""
    import torch  # here: the resolvers compose every config (--help, tab completion) through this module

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated or corrupt file fails in torch in many ways
        raise ResumeError(f"{ckpt_path} cannot be read: it is truncated or corrupt. Resume from another "
                          f"checkpoint of the run (ckpt_path=<run>/{CHECKPOINTS}/best.ckpt) or start a new run"
                          ) from None
    missing = [key for key in TRAINING_STATE if key not in checkpoint] if isinstance(checkpoint, dict) \
        else list(TRAINING_STATE)
    if missing:
        raise ResumeError(f"{ckpt_path} holds no training state to continue ({', '.join(missing)} missing): "
                          "resume from a checkpoint that train.py saved, or start a new run")
    return checkpoint


def check_weights_fit(checkpoint: dict, net: "nn.Module") -> None:
    """The net the config describes takes the checkpoint's weights: the same names and shapes."""
    saved = {key.removeprefix("net."): tuple(value.shape) for key, value in checkpoint["state_dict"].items()
             if key.startswith("net.")}
    built = {key: tuple(value.shape) for key, value in net.state_dict().items()}
    differing = sorted(key for key in saved.keys() | built.keys() if saved.get(key) != built.get(key))
    if differing:
        key = differing[0]
        raise ResumeError(f"the checkpoint's weights do not fit the net the model settings now describe "
                          f"(net.{key}: {list(saved[key]) if key in saved else 'absent'} in the checkpoint, "
                          f"{list(built[key]) if key in built else 'absent'} now): resume without overriding "
                          "model settings, or start a new run with them")
