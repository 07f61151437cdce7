"""The run's checkpoint callback: best.ckpt by validation score, last.ckpt to resume from."""

import ast
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, whose record of the best score survives a resumed run that
    saves more or less often (`every_n_train_steps`, `every_n_epochs`, `train_time_interval`).

    Lightning files that record in the checkpoint under a key naming all five of these settings.
    A resumed run with another key would drop the record with only a warning, and its next
    validation would replace best.ckpt even with a worse model. Here the key names only what the
    record measures: the monitored metric and its mode (which a resume may not change).

    The checkpoint also keeps the monitored value last measured (val/acc of the last validation).
    A resumed process has measured nothing yet, and Lightning would put off every step
    checkpoint until its next validation, where the uninterrupted run goes on saving them.
    """

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self.restored_score: Tensor | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A checkpoint saved before this class holds the record under ModelCheckpoint's own key.
        saved = checkpoint.get("callbacks", {})
        if self.state_key in saved:
            return
        for key, state in saved.items():
            name, _, settings = key.partition("{")
            settings = ast.literal_eval("{" + settings) if name == "ModelCheckpoint" else {}
            if settings.get("monitor") == self.monitor and settings.get("mode") == self.mode:
                self.load_state_dict(state)
                return

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None:
            checkpoint["callbacks"][self.state_key]["last_score"] = score.detach().cpu()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.restored_score = state_dict.get("last_score")

    def _monitor_candidates(self, trainer: L.Trainer) -> dict[str, Tensor]:
        candidates = super()._monitor_candidates(trainer)
        if self.monitor not in candidates and self.restored_score is not None:
            candidates[self.monitor] = self.restored_score
        return candidates
