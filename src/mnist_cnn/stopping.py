"""Stopping a run safely: on a signal (checkpoint, then exit) and on a diverging loss."""

import math
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_cnn.resume import CHECKPOINTS, LAST_CHECKPOINT


class TrainingDiverged(RuntimeError):
    """The training loss became NaN, infinite or far larger than chance."""


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where a resume looks: the run folder's checkpoints/last.ckpt, even with checkpointing off."""
    return Path(trainer.default_root_dir) / CHECKPOINTS / LAST_CHECKPOINT


class CheckpointOnInterrupt(Callback):
    """SIGINT (Ctrl+C) and SIGTERM stop training at the end of a step and save last.ckpt.

    In one process Lightning's SIGTERM handler does this, and Ctrl+C is routed to it instead of
    interrupting the optimizer step wherever it happens to be. Under DDP Lightning's handler is
    not enough: each rank stops at its own next step (a signal may reach one rank, or reach them
    at different steps), so the collective save of last.ckpt would mix steps or hang. There this
    callback's handler only notes the signal, and at the end of every step the ranks agree
    (one all-reduce) whether any rank was signalled: all stop at the same step.
    """

    def __init__(self):
        self.signal_received: int | None = None
        self._signalled = False  # under DDP: this rank got a signal the ranks have not yet agreed on
        self._replaced_handlers: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not earlier: Lightning snapshots every signal handler just before training and puts
        # the snapshot back after an exception, which would reinstall these handlers.
        self._signalled = False
        self._replace_handler(signal.SIGINT, self._sigint_as_sigterm)
        if trainer.world_size > 1:
            # Lightning's handler would stop this rank alone, and runs a collective inside the handler.
            self._replace_handler(signal.SIGTERM, self._note_sigterm)

    def _replace_handler(self, signum: int, handler) -> None:
        self._replaced_handlers[signum] = signal.signal(signum, handler)

    def _sigint_as_sigterm(self, signum, frame) -> None:
        self.signal_received = signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)

    def _note_sigterm(self, signum, frame) -> None:
        self._signalled = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            # The flag Lightning's own handler sets: every rank raises SIGTERMException at the end of this step.
            trainer._signal_connector.received_sigterm = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Whatever ended the fit (a signal, a divergence, a bug), a later Ctrl+C in this
        # process must act as usual, not send SIGTERM to a process that no longer trains.
        try:
            if isinstance(exception, SIGTERMException):
                self.signal_received = self.signal_received or signal.SIGTERM
                trainer.save_checkpoint(last_checkpoint_path(trainer), weights_only=False)
        finally:
            self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._replaced_handlers.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(signum, handler)
        self._replaced_handlers = {}


class StopOnDivergence(Callback):
    """Raise TrainingDiverged when the training loss is not finite or exceeds `max_loss`.

    A loss far above chance (ln(num_classes)) is an explosion even while it stays finite:
    `max_loss` null means 100 x ln(num_classes). The check reads the device only every
    `check_every_n_steps` steps and at the end of each epoch (a host sync per step would
    stall it); the first bad step and its loss are remembered on the device meanwhile.
    Under DDP every rank gathers them at the same steps, so all ranks raise together
    instead of the healthy ones waiting in the next collective for the one that stopped.
    """

    def __init__(self, check_every_n_steps: int, max_loss: float | None):
        self.check_every_n_steps = check_every_n_steps
        self.max_loss = max_loss
        self.loss_limit = max_loss
        self.first_bad: torch.Tensor | None = None  # (step, loss); step -1 while all is well

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.max_loss is None:
            self.loss_limit = 100 * math.log(pl_module.hparams.model.get("num_classes", 10))
        self.first_bad = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # Lightning hands over the loss divided by accumulate_grad_batches (what backward sees).
        loss = outputs["loss"].detach().float() * trainer.accumulate_grad_batches
        if self.first_bad is None:
            self.first_bad = torch.tensor([-1.0, 0.0], device=loss.device)
        newly_bad = (~torch.isfinite(loss) | (loss > self.loss_limit)) & (self.first_bad[0] < 0)
        step = torch.tensor(float(trainer.global_step), device=loss.device)
        self.first_bad = torch.where(newly_bad, torch.stack([step, loss]), self.first_bad)
        is_last_batch = batch_idx + 1 >= trainer.num_training_batches
        if trainer.global_step % self.check_every_n_steps != 0 and not is_last_batch:
            return
        # (world_size, 2) under DDP, (2,) in one process; every rank's first bad step and loss
        every_rank = trainer.strategy.all_gather(self.first_bad).reshape(-1, 2).cpu()
        bad = every_rank[every_rank[:, 0] >= 0]
        if len(bad):
            step, bad_loss = bad[bad[:, 0].argmin()].tolist()
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            raise TrainingDiverged(
                f"training diverged: the loss became {bad_loss:g} at step {int(step)} "
                f"(epoch {trainer.current_epoch}). Try a lower learning rate than {lr:g}, "
                f"e.g. optimizer.lr={lr / 10:g}."
            )
