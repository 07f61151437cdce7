"""Faults that tests inject into `python train.py` runs as extra callbacks:
`+callbacks.<name>._target_=faults.<class>` with this folder on PYTHONPATH."""

import lightning as L
import torch


class NanWeightsOnOneRank(L.Callback):
    """Before training step `step`, rank `rank` sets its model's weights to NaN: that rank's
    loss of this step is NaN while every other rank's is still finite."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


class ZeroWeightsAtStep(L.Callback):
    """Before training step `step`, every weight becomes 0: the net forgets what it learned and,
    its ReLUs dead, learns little after (a run that gets worse)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.zero_()
