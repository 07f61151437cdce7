"""Pruning for the Optuna sweeper: a sweep job reports val/acc to its trial after every
validation pass, through the study's storage, and stops when the study's pruner says so."""

import lightning as L
from lightning.pytorch.callbacks import Callback


class TrialPruned(Exception):
    """The study's pruner stopped this trial: a result (a hopeless trial), not a failure."""


class TrialTakenOver(RuntimeError):
    """Another worker of the search found this trial's search silent (stopped or stalled), recorded
    the trial failed and replaced it: what this job goes on to compute would not count."""


class PruneTrial(Callback):
    """Reports `monitor` to trial `trial_number` of the search's study and stops training when
    the search's pruner prunes the trial. Does nothing when `trial_number` is null (a plain run)."""

    def __init__(self, trial_number: int | None, monitor: str = "val/acc"):
        self.trial_number = trial_number
        self.monitor = monitor
        self.trial = None
        self.pruned_after: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.trial_number is None or not trainer.is_global_zero or self.trial is not None:
            return
        import optuna  # the sweep extra; only sweep jobs get here
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from hydra_plugins.mnist_optuna_sweeper._storage import open_storage

        # The search's own study name, storage and pruner, read here rather than passed in the
        # job's config: Hydra's nodes are read-only, and a storage node's interpolations
        # (${hydra.sweep.dir}) can be resolved only as a plain copy.
        search = OmegaConf.to_container(HydraConfig.get().sweeper, resolve=True)
        storage = open_storage(search["storage"])
        study = optuna.load_study(study_name=search["study_name"], storage=storage,
                                  pruner=instantiate(search["pruner"]))
        study_id = storage.get_study_id_from_name(search["study_name"])
        self.trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial_number is None or trainer.sanity_checking:
            return
        from optuna.exceptions import UpdateFinishedTrialError

        verdict, taken_over = None, False
        if trainer.is_global_zero:
            value = float(trainer.callback_metrics[self.monitor])
            try:
                # Reported by epoch, not by step: trials with other batch sizes are compared at equal epochs.
                self.trial.report(value, step=trainer.current_epoch)
                if self.trial.should_prune():
                    verdict = f"epoch {trainer.current_epoch} with {self.monitor}={value:.4f}"
            except UpdateFinishedTrialError:
                taken_over = True
        # Every rank learns rank 0's verdict, so all stop together.
        self.pruned_after, taken_over = trainer.strategy.broadcast((verdict, taken_over))
        if taken_over:
            raise TrialTakenOver(f"trial {self.trial_number} was recorded failed by another worker of the search, "
                                 "which found this search silent, and is replaced: this job stops here")
        if self.pruned_after:
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Raised once fit has ended, so the epoch count and last.ckpt are those of a normal stop.
        if self.pruned_after:
            raise TrialPruned(f"trial {self.trial_number} pruned after {self.pruned_after}")
