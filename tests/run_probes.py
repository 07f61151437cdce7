"""Callbacks that tests add to a `python train.py` run through the config, e.g.
`+callbacks.probe._target_=run_probes.RecordTrainedBatches`, with tests/ on PYTHONPATH.

They let a test see inside a real run: which images every step trained on, and an
interruption at an exact step instead of whenever a signal happens to arrive.
"""

import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_cnn.data import denormalize


def image_ids(images: torch.Tensor) -> list[int]:
    """The ids that `learnable_digits` (tests/conftest.py) wrote into the first two pixels of each image."""
    pixels = denormalize(images).flatten(1).long()
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist()


class RecordTrainedBatches(L.Callback):
    """Appends one JSON line per optimizer step to `path`.rank<k>: the step, its epoch, the ids of
    the images it trained on and a checksum of the batch exactly as the model saw it. A resumed run
    appends to the same file; for a step recorded twice, the later line is the one that counts.
    When training ends, each rank's weights go to `path`.rank<k>.weights (checkpoints may be older);
    when a signal stops it, the step it stopped at goes to `path`.rank<k>.stopped."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save(pl_module.state_dict(), rank_file(self.path, trainer.global_rank, ".weights"))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            rank_file(self.path, trainer.global_rank, ".stopped").write_text(str(trainer.global_step))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        images, _ = batch
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "ids": image_ids(images),
                  "checksum": float(images.double().sum())}
        with rank_file(self.path, trainer.global_rank).open("a") as file:
            file.write(json.dumps(record) + "\n")


class RecordRankEnvironment(L.Callback):
    """Writes to `path`.rank<k>.environment, when fit starts, how rank k was started: its SLURM
    task id (SLURM_PROCID, null outside SLURM) and the cluster environment Lightning detected."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {"slurm_procid": os.environ.get("SLURM_PROCID"),
                  "cluster_environment": type(trainer.strategy.cluster_environment).__name__}
        rank_file(self.path, trainer.global_rank, ".environment").write_text(json.dumps(record))


def rank_environment(path: Path, rank: int) -> dict:
    """What `RecordRankEnvironment` recorded for rank `rank`."""
    return json.loads(rank_file(path, rank, ".environment").read_text())


def rank_file(path: Path, rank: int, suffix: str = "") -> Path:
    """Where rank `rank` records what `path` names: beside it, never in the run folder."""
    return path.with_name(f"{path.name}.rank{rank}{suffix}")


def trained_batches(path: Path, rank: int = 0) -> dict[int, dict]:
    """step -> what `RecordTrainedBatches` last recorded for it."""
    lines = rank_file(path, rank).read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def trained_weights(path: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    """The weights `RecordTrainedBatches` saved when training ended."""
    return torch.load(rank_file(path, rank, ".weights"), weights_only=True)


def stopped_step(path: Path, rank: int = 0) -> int | None:
    """The step a signal stopped training at, as `RecordTrainedBatches` saw it; None if none did."""
    stopped = rank_file(path, rank, ".stopped")
    return int(stopped.read_text()) if stopped.exists() else None


class SignalAtStep(L.Callback):
    """Sends `signal_name` (SIGINT, SIGTERM or SIGKILL) to its own process once `at_step`
    optimizer steps are done; `at_step: -1` never does (for the resumed run). Under DDP only
    rank `rank` does, if given, as when a signal reaches one process of a job."""

    def __init__(self, at_step: int, signal_name: str, rank: int | None = None):
        self.at_step, self.signum, self.rank = at_step, signal.Signals[signal_name], rank

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step == self.at_step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)


class WaitAtStep(L.Callback):
    """Once `at_step` optimizer steps are done, writes `marker` and waits there until a signal
    stops the run, so that a test can stop a run (requeue a cluster job) at a known step. A run
    that finds `marker` already written (the same job, started again) goes straight on."""

    def __init__(self, at_step: int, marker: str, timeout_s: float = 120):
        self.at_step, self.marker, self.timeout_s = at_step, Path(marker), timeout_s

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step != self.at_step or self.marker.exists():
            return
        self.marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout_s
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)
