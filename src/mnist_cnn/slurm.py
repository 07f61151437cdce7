"""What a sweep job asks SLURM for, read from the trainer it runs (resolvers of
conf/hydra/launcher/submitit_slurm.yaml), and submitit's status polls on a cluster without accounting."""

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# A process's own thread and its data loading: what a job gets unless `threads` says more.
DEFAULT_CPUS_PER_TASK = 2


def gpus_per_node(accelerator: str, devices: int) -> int:
    """One GPU per device of a GPU trainer; none for a CPU trainer, or `auto`, which on a
    CPU-only partition must not ask for any (sbatch refuses a GPU request it cannot meet)."""
    return int(devices) if accelerator in ("gpu", "cuda") else 0


def cpus_per_task(threads: int | None) -> int:
    """The torch threads of one process, when the run sets them."""
    return DEFAULT_CPUS_PER_TASK if threads is None else int(threads)


class OneSacctWarning(logging.Filter):
    """submitit polls `sacct` for its jobs' states and warns at every poll when it fails, as it
    does on a cluster without accounting. The states then come from the jobs' result files,
    which is enough: one line says so, and later polls say nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.warned = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if self.warned:
            return False
        self.warned = True
        record.msg, record.args = ("sacct failed (is SLURM accounting off?): job states come from "
                                   "submitit's result files, without SLURM's view of them"), ()
        return True


class QuietSacctPolls(Callback):
    """A Hydra callback: submitit's failed status polls say so once per sweep."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        logging.getLogger("submitit").addFilter(OneSacctWarning())
