"""Checkpoint files that are never half-written."""

import errno
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

# No space left, and a disk quota exceeded (common on clusters' shared file systems).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(RuntimeError):
    """A checkpoint did not fit on its disk; the message names the last one that did."""


def last_complete_checkpoint(folder: Path) -> str:
    finished = sorted(folder.glob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    return f"the last complete checkpoint is {finished[-1]}" if finished else "no checkpoint was completed yet"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its target, then renames it into place:
    a process killed mid-write, or a full disk, leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Serialised in memory first: torch.save streaming into a full disk fails with a
        # riddle ("unexpected pos"), a plain write with ENOSPC.
        serialised = io.BytesIO()
        torch.save(checkpoint, serialised)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with temporary.open("wb") as file:
                file.write(serialised.getbuffer())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)  # atomic within one file system
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            temporary.unlink(missing_ok=True)  # frees the space before anything else is written
            raise DiskFullError(f"{error.strerror.lower()} while writing {path}; "
                                f"{last_complete_checkpoint(path.parent)}") from error
        finally:
            temporary.unlink(missing_ok=True)
