"""What a run prints: progress, results and what a user can act on, without the notices
libraries print about themselves."""

import logging
import sys
import warnings
from typing import NoReturn


class _DropMessages(logging.Filter):
    """Drops the log records whose message contains one of `texts`."""

    def __init__(self, *texts: str):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.texts)


# Lightning advertises its cloud logger on every run that logs elsewhere.
_LIGHTNING_ADVERTS = _DropMessages("try installing [litlogger]")


def quiet_library_notices() -> None:
    """Hide the notices a user of this project cannot act on; every other warning stays."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_LIGHTNING_ADVERTS)
    # Lightning's own pytree helper still uses the LeafSpec that torch deprecates.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    # On a machine with SLURM installed (a login node, the local cluster), Lightning hints at srun on
    # every run started without it; this project's DDP launcher starts its ranks itself.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
    # The launcher configs keep the names hydra-submitit-launcher registers its settings under
    # (hydra/launcher=submitit_slurm), which Hydra 1.3 calls deprecated schema matching.
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema")


def exit_with(message: str) -> NoReturn:
    """Stop with one line naming what is wrong and the fix: exit status 1, no traceback."""
    print(f"Error: {message}", file=sys.stderr)
    raise SystemExit(1)
