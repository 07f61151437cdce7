"""Stopping a run safely: on a signal (checkpoint, then exit) and on a diverging loss."""

import os
import signal
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_cnn.resume import CHECKPOINTS, LAST_CHECKPOINT


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where a resume looks: the run folder's checkpoints/last.ckpt, even with checkpointing off."""
    return Path(trainer.default_root_dir) / CHECKPOINTS / LAST_CHECKPOINT


class CheckpointOnInterrupt(Callback):
    """SIGINT (Ctrl+C) and SIGTERM stop training at the next step boundary and save last.ckpt.

    Lightning already turns SIGTERM into a SIGTERMException at a step boundary, agreed
    across DDP ranks; Ctrl+C is routed to the same path instead of interrupting the
    optimizer step wherever it happens to be.
    """

    def __init__(self):
        self.signal_received: int | None = None
        self._original_sigint = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._original_sigint = signal.signal(signal.SIGINT, self._sigint_as_sigterm)

    def _sigint_as_sigterm(self, signum, frame) -> None:
        self.signal_received = signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signal.signal(signal.SIGINT, self._original_sigint)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal_received = self.signal_received or signal.SIGTERM
            trainer.save_checkpoint(last_checkpoint_path(trainer), weights_only=False)
            signal.signal(signal.SIGINT, self._original_sigint)


class StopOnDivergence(Callback):
    """Raise TrainingDiverged when the training loss is not finite.

    The check reads the GPU only every `check_every_n_steps` steps (a host sync per
    step would stall the device); the first bad step is remembered on the device.
    """

    def __init__(self, check_every_n_steps: int):
        self.check_every_n_steps = check_every_n_steps
        self.first_bad_step: torch.Tensor | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        loss = outputs["loss"].detach()
        step = torch.tensor(trainer.global_step, device=loss.device)
        if self.first_bad_step is None:
            self.first_bad_step = torch.tensor(-1, device=loss.device)
        newly_bad = (~torch.isfinite(loss)) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(newly_bad, step, self.first_bad_step)
        is_last_batch = batch_idx + 1 >= trainer.num_training_batches
        if (trainer.global_step % self.check_every_n_steps == 0 or is_last_batch) and self.first_bad_step >= 0:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            raise TrainingDiverged(
                f"training diverged: the loss became {loss.item()} at step {int(self.first_bad_step)} "
                f"(epoch {trainer.current_epoch}). Try a lower learning rate than {lr:g}, "
                f"e.g. optimizer.lr={lr / 10:g}."
            )
