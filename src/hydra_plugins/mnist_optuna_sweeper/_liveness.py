"""Which running trials are alive. A search that dies (SIGKILL, a lost node) leaves its trials
RUNNING in the storage; a trial whose search stopped sending heartbeats is recorded failed, so
the next search replaces it. Kept in a user attribute, which every Optuna storage holds
(Optuna's own heartbeat exists only for RDB storages and only inside `study.optimize`)."""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

log = logging.getLogger(__name__)

HEARTBEAT = "heartbeat"  # the user attribute: seconds since the epoch of the last sign of life


def beat(trial: optuna.Trial) -> None:
    try:
        trial.set_user_attr(HEARTBEAT, time.time())
    except UpdateFinishedTrialError:
        pass  # told meanwhile: nothing left to keep alive


def fail_dead_trials(study: optuna.Study, grace_period_s: float) -> list[int]:
    """Record FAIL for the running trials silent longer than `grace_period_s`; returns their numbers."""
    now = time.time()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = (trial.datetime_start or datetime.now()).timestamp()
        if now - trial.user_attrs.get(HEARTBEAT, started) > grace_period_s:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            dead.append(trial.number)
    if dead:
        log.warning("trials %s were left running by a search that stopped: recorded failed", dead)
    return dead


@contextmanager
def heartbeat(trials: list[optuna.Trial], interval_s: float) -> Iterator[None]:
    """While in its `with` block, a thread marks `trials` alive every `interval_s`."""
    stopped = threading.Event()

    def beat_until_stopped() -> None:
        while not stopped.wait(interval_s):
            for trial in trials:
                beat(trial)

    for trial in trials:
        beat(trial)
    thread = threading.Thread(target=beat_until_stopped, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()
