"""Whether a sweep job is still running, for whoever summarises a sweep folder that other
processes share (workers of one Optuna study): every process of a job holds a shared lock on
a file in the job's folder while it lives, and the kernel releases it when the process ends,
even by SIGKILL. A job without metrics.json whose lock is free has died; one whose lock is
held is still running elsewhere, and is not yet a failure."""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".running.lock"


@contextmanager
def job_running(job_dir: Path) -> Iterator[None]:
    """Marks `job_dir` as running for as long as the block (and this process) lasts."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with (job_dir / LOCK_FILE).open("a") as file:
        fcntl.flock(file, fcntl.LOCK_SH)  # shared: every rank of a DDP job may hold it
        yield


def is_running(job_dir: Path) -> bool:
    """True while some process of the job in `job_dir` is inside `job_running`."""
    lock = job_dir / LOCK_FILE
    if not lock.exists():
        return False
    with lock.open("a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(file, fcntl.LOCK_UN)
        return False
