"""Which running trials are alive. A search that dies (SIGKILL, a lost node) leaves its trials
RUNNING in the storage; a trial whose search stopped sending heartbeats is recorded failed, so
the next search replaces it. Kept in a user attribute, which every Optuna storage holds
(Optuna's own heartbeat exists only for RDB storages and only inside `study.optimize`)."""

import logging
import threading
import time
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


class Heartbeat:
    """While in its `with` block, a thread marks the given trials alive every `interval_s`."""

    def __init__(self, trials: list[optuna.Trial], interval_s: float) -> None:
        self.trials = trials
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            for trial in self.trials:
                beat(trial)

    def __enter__(self) -> "Heartbeat":
        for trial in self.trials:
            beat(trial)
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
