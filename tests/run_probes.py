"""Callbacks that tests add to a `python train.py` run through the config, e.g.
`+callbacks.probe._target_=run_probes.RecordTrainedBatches`, with tests/ on PYTHONPATH.

They let a test see inside a real run: which images every step trained on, and an
interruption at an exact step instead of whenever a signal happens to arrive.
"""

import json
import os
import signal
from pathlib import Path

import lightning as L
import torch

from mnist_cnn.data import denormalize


def image_ids(images: torch.Tensor) -> list[int]:
    """The ids that `learnable_digits` (tests/conftest.py) wrote into the first two pixels of each image."""
    pixels = denormalize(images).flatten(1).long()
    return (pixels[:, 0] * 256 + pixels[:, 1]).tolist()


class RecordTrainedBatches(L.Callback):
    """Appends one JSON line per optimizer step to `path`: the step, its epoch, the ids of the
    images it trained on and a checksum of the batch exactly as the model saw it. A resumed run
    appends to the same file; for a step recorded twice, the later line is the one that counts.
    When training ends, the weights go to `path` + `.weights` (checkpoints may be older)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            torch.save(pl_module.state_dict(), self.path.with_name(f"{self.path.name}.weights"))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        images, _ = batch
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "ids": image_ids(images),
                  "checksum": float(images.double().sum())}
        with self.path.with_name(f"{self.path.name}.rank{trainer.global_rank}").open("a") as file:
            file.write(json.dumps(record) + "\n")


def trained_batches(path: Path, rank: int = 0) -> dict[int, dict]:
    """step -> what `RecordTrainedBatches` last recorded for it."""
    lines = path.with_name(f"{path.name}.rank{rank}").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


class SignalAtStep(L.Callback):
    """Sends `signal_name` (SIGINT, SIGTERM or SIGKILL) to its own process once `at_step`
    optimizer steps are done; `at_step: -1` never does (for the resumed run)."""

    def __init__(self, at_step: int, signal_name: str):
        self.at_step, self.signum = at_step, signal.Signals[signal_name]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
