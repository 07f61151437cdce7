"""Random numbers that a resumed run draws exactly as the uninterrupted run drew them.

Before each training batch, torch's generators (the CPU's and this rank's GPU's), numpy's and
Python's are seeded from (run seed, batch number over the run, rank). A step's dropout masks,
and any other draw in it, then depend on where the run is, never on what the process drew
before: a run resumed from any checkpoint, even the last step checkpoint of a killed process,
continues the uninterrupted run's draws without generator states in the checkpoint, and each
rank draws its own. (Augmentation seeds its own generator per batch the same way:
`augment.batch_seed`.)
"""

import random

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

# Tells these seeds apart from augmentation's, so the two streams never coincide.
STREAM = 1


def seed_generators(seed: int, batch_number: int, rank: int) -> None:
    """Seed every global generator for one training batch of one rank."""
    state = np.random.SeedSequence([seed, batch_number, rank, STREAM]).generate_state(2, dtype=np.uint64)
    # Not torch.manual_seed, which also visits every other device type: a hundred times slower.
    torch.random.default_generator.manual_seed(int(state[0]))
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed(int(state[0]))  # this rank's GPU, where its dropout masks are drawn
    np.random.seed(int(state[1] % 2**32))
    random.seed(int(state[1]))


class SeedEachTrainingBatch(Callback):
    """Seeds the generators before every training batch (the batch number is Lightning's count
    of batches over the run, which a checkpoint restores)."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        seed_generators(self.seed, trainer.fit_loop.total_batch_idx, trainer.global_rank)
