"""Which running trials are alive. A search that dies (SIGKILL, a lost node) leaves its trials
RUNNING in the storage. While a search runs a trial, a thread counts heartbeats into a user
attribute of the trial; a worker judges the trial dead once it has itself watched that count stand
still for longer than the grace period, on its own monotonic clock, so machines' clocks need not
agree. A user attribute, because every Optuna storage holds one (Optuna's own heartbeat exists
only for RDB storages and only inside `study.optimize`)."""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

log = logging.getLogger(__name__)

# The user attribute: how many times the trial's search said it is alive. Searches before the
# count wrote a time of their own clock there; it is only ever compared with itself, never read.
HEARTBEAT = "heartbeat"


def beat(trial: optuna.Trial, number: int) -> None:
    try:
        trial.set_user_attr(HEARTBEAT, number)
    except UpdateFinishedTrialError:
        pass  # told meanwhile, here or by a worker that found it silent: nothing left to keep alive
    # A locked database, a lost connection, a full disk: each storage fails in its own way, and a
    # thread that died of it would leave a live trial to be judged dead; the next beat tries again.
    except Exception as error:  # noqa: BLE001
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        log.warning("trial %d: heartbeat not recorded (%s); trying again at the next beat", trial.number, reason)


@contextmanager
def heartbeat(trials: list[optuna.Trial], interval_s: float) -> Iterator[None]:
    """While in its `with` block, a thread marks `trials` alive every `interval_s`."""
    stopped = threading.Event()
    beats = count(1)

    def beat_until_stopped() -> None:
        while not stopped.wait(interval_s):
            number = next(beats)
            for trial in trials:
                beat(trial, number)

    first = next(beats)
    for trial in trials:
        beat(trial, first)
    thread = threading.Thread(target=beat_until_stopped, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


class SilenceWatch:
    """Watches a study's running trials, each look at the storage compared with the last: a trial
    whose heartbeat this worker has seen stand still for longer than `grace_period_s` of its own
    monotonic clock is silent, and recorded failed. So a first look judges nothing."""

    def __init__(self, grace_period_s: float) -> None:
        self.grace_period_s = grace_period_s
        # Each running trial's number -> its heartbeat, when this worker first saw that heartbeat,
        # and whether the heartbeat has changed while watched (the trial showed a sign of life).
        self.seen: dict[int, tuple[Any, float, bool]] = {}

    def fail_silent(self, study: optuna.Study) -> list[int]:
        """Look again; record FAIL for the trials silent for too long, and return their numbers."""
        now = time.monotonic()
        seen, silent = {}, []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            value = trial.user_attrs.get(HEARTBEAT)
            last_value, since, has_beaten = self.seen.get(trial.number, (value, now, False))
            if value != last_value:
                seen[trial.number] = (value, now, True)
            elif now - since > self.grace_period_s:
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                silent.append(trial.number)
            else:
                seen[trial.number] = (last_value, since, has_beaten)
        self.seen = seen
        if silent:
            log.warning("trials %s were left running by a search that stopped (no heartbeat for %s s): "
                        "recorded failed", silent, self.grace_period_s)
        return silent

    def unproven(self) -> list[int]:
        """The trials running at the last look whose heartbeat this worker has not yet seen change."""
        return [number for number, (_, _, has_beaten) in self.seen.items() if not has_beaten]
