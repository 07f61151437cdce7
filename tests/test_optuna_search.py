"""The Optuna search (`python train.py -m hparams_search=optuna`) on tiny synthetic data, as a
user runs it: pruning through the study's storage, resuming after the search is killed, and
workers with different launchers sharing one study."""

import csv
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, only_run_dir, run_train, train_arguments
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf
from sqlalchemy import exc as sqlalchemy_exc

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hydra_plugins.mnist_optuna_sweeper import _storage
from hydra_plugins.mnist_optuna_sweeper._liveness import (
    HEARTBEAT,
    SilenceWatch,
    heartbeat,
)
from hydra_plugins.mnist_optuna_sweeper._search import tell
from hydra_plugins.mnist_optuna_sweeper._search_space import search_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Test-sized search: two small nets, a search that may stop quickly after a kill.
SMALL_NETS = "model.channels=choice([4,8],[8,16])"
QUICK_HEARTBEAT = ("hydra.sweeper.heartbeat_interval_s=1", "hydra.sweeper.grace_period_s=3")


def study_dir(log_dir: Path) -> Path:
    return log_dir / "optuna" / "mnist-cnn"


def load_study(log_dir: Path) -> "optuna.Study":
    return optuna.load_study(study_name="mnist-cnn", storage=f"sqlite:///{study_dir(log_dir)}/study.db")


def trial_metrics(log_dir: Path, number: int) -> dict:
    return json.loads((study_dir(log_dir) / str(number) / "metrics.json").read_text())


def summary_rows(log_dir: Path) -> dict[str, dict[str, str]]:
    with (study_dir(log_dir) / "summary.csv").open() as file:
        return {row["job"]: row for row in csv.DictReader(file)}


def search(tiny_data, log_dir: Path, *overrides: str, timeout_s: int = 600) -> subprocess.CompletedProcess:
    result = run_train(tiny_data, log_dir, "hparams_search=optuna", SMALL_NETS, *overrides,
                       multirun=True, timeout_s=timeout_s)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_search_space_syntax_becomes_optuna_distributions():
    searched, fixed = search_space(["optimizer.lr=tag(log, interval(1e-4, 1e-2))", "model.dropout=interval(0, 0.5)",
                                    "data.batch_size=choice(32, 64)", "model.channels=choice([4,8],[8,16])",
                                    "trainer.max_epochs=range(1, 4)", "seed=7"])
    assert searched["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert searched["model.dropout"] == FloatDistribution(0, 0.5)
    assert searched["data.batch_size"] == CategoricalDistribution([32, 64])
    assert searched["model.channels"] == CategoricalDistribution(["[4,8]", "[8,16]"])
    assert searched["trainer.max_epochs"] == IntDistribution(1, 3)  # range() excludes its stop, as in Python
    assert fixed == {"seed": "7"}


def overrides_optuna_can_give(key: str, distribution) -> set[str]:
    """Every `key=value` override a job of the search can get from a discrete distribution."""
    if isinstance(distribution, CategoricalDistribution):
        values = distribution.choices
    else:
        assert isinstance(distribution, IntDistribution), distribution  # a float range must be exact
        values = range(distribution.low, distribution.high + 1, distribution.step)
    return {f"{key}={value}" for value in values}


@pytest.mark.parametrize("sweep", ["range(0.0,0.3,0.1)", "range(0,1,0.3)", "range(0.5,0.1,-0.1)", "range(1,10,3)",
                                   "range(10,1,-3)", "range(1,4)", "shuffle(range(0.0,0.3,0.1))",
                                   "shuffle(range(1,10,3))"])
def test_a_range_gives_optuna_exactly_the_values_hydras_own_sweeper_runs(sweep):
    overrides = OverridesParser.create().parse_overrides([f"model.dropout={sweep}"])
    [hydra_jobs] = BasicSweeper.split_arguments(overrides, max_batch_size=None)  # one batch: every job

    searched, _ = search_space([f"model.dropout={sweep}"])

    assert overrides_optuna_can_give("model.dropout", searched["model.dropout"]) == {job for [job] in hydra_jobs}


def test_an_empty_range_is_one_line_naming_it():
    with pytest.raises(ValueError, match=r"^model.dropout=range\(5,1\): .*empty.*step") as error:
        search_space(["model.dropout=range(5,1)"])
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_hopeless_trials_are_pruned_and_folder_metrics_study_and_summary_agree(tiny_data, tmp_path):
    # Learning rates up to 10 wreck training; one completed trial is enough for the median.
    search(tiny_data, tmp_path, "hydra.sweeper.n_trials=5", "hydra.sweeper.sampler.seed=3",
           "optimizer.lr=tag(log, interval(1e-3, 10.0))", "hydra.sweeper.pruner.n_startup_trials=1",
           "trainer.max_epochs=3")

    study, rows = load_study(tmp_path), summary_rows(tmp_path)
    pruned = [trial for trial in study.trials if trial.state == TrialState.PRUNED]
    # A trial whose loss diverged is stopped before any report, and is PRUNED for Optuna too.
    diverged = [trial for trial in pruned if trial.user_attrs["status"] == "diverged"]
    by_pruner = [trial for trial in pruned if trial not in diverged]
    assert by_pruner, [(trial.params, trial.intermediate_values) for trial in study.trials]
    assert sorted(rows) == sorted(str(trial.number) for trial in study.trials)  # one folder per trial
    for trial in diverged:
        assert trial_metrics(tmp_path, trial.number)["status"] == rows[str(trial.number)]["status"] == "diverged"
    for trial in by_pruner:
        metrics = trial_metrics(tmp_path, trial.number)
        last_epoch = max(trial.intermediate_values)  # reported to the storage after each validation
        assert metrics["status"] == "pruned" and metrics["epochs"] == last_epoch + 1 < 3
        assert "test/acc" not in metrics  # stopped, not tested
        assert rows[str(trial.number)]["status"] == "pruned"
        assert rows[str(trial.number)]["epochs"] == str(metrics["epochs"])
    completed = [trial for trial in study.trials if trial.state == TrialState.COMPLETE]
    for trial in completed:
        metrics = trial_metrics(tmp_path, trial.number)
        assert metrics["status"] == "completed" and trial.value == pytest.approx(metrics["val/acc_best"])
        assert len(trial.intermediate_values) == metrics["epochs"] == 3
    results = OmegaConf.load(study_dir(tmp_path) / "optimization_results.yaml")
    assert results.best_value == max(trial.value for trial in completed)
    assert results.trials == {"complete": len(completed), "pruned": len(pruned)}


def one_finished_one_training(log_dir: Path) -> bool:
    """One trial has finished and the next one's job has started (its folder exists)."""
    if not (study_dir(log_dir) / "0").exists():  # the study's tables exist once a trial has started
        return False
    trials = load_study(log_dir).trials
    running = [trial.number for trial in trials if trial.state == TrialState.RUNNING]
    return (sum(trial.state == TrialState.COMPLETE for trial in trials) == 1 and len(running) == 1
            and (study_dir(log_dir) / str(running[0]) / ".hydra" / "overrides.yaml").exists())


def start_as_from_a_terminal(command: list[str]) -> subprocess.Popen:
    """The search as a terminal starts it. A shell starts background jobs with Ctrl+C ignored,
    and a child inherits an ignored signal: a test run started that way would hand that on.
    A handler, unlike an ignored signal, is reset to the default in the child."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        signal.signal(signal.SIGINT, inherited)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl_c"])
def test_a_killed_search_resumes_with_only_the_missing_trials_each_the_run_its_settings_make(tiny_data, tmp_path, stop):
    # After SIGKILL only the heartbeat tells the dead trial; after Ctrl+C the default minutes of
    # grace stay, so only the search's own record of its stop lets the rerun replace the trial.
    heartbeat = QUICK_HEARTBEAT if stop == signal.SIGKILL else ()
    overrides = ["hparams_search=optuna", SMALL_NETS, "hydra.sweeper.n_trials=3", "hydra/sweeper/pruner=none",
                 "trainer.max_epochs=4", *heartbeat]
    command = [sys.executable, str(PROJECT_ROOT / "train.py"),
               *train_arguments(tiny_data, tmp_path, *overrides, multirun=True)]
    with start_as_from_a_terminal(command) as first:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not one_finished_one_training(tmp_path):
            time.sleep(0.5)
        [killed] = [trial.number for trial in load_study(tmp_path).trials if trial.state == TrialState.RUNNING]
        first.send_signal(stop)
        first.wait(timeout=120)
    if stop == signal.SIGKILL:
        time.sleep(4)  # past the grace period: the killed search's heartbeats have stopped

    again = search(tiny_data, tmp_path, *overrides[2:])

    trials = load_study(tmp_path).trials
    assert [trial.number for trial in trials] == list(range(len(trials)))  # unique, none lost
    assert sum(trial.state in FINISHED for trial in trials) == 3
    assert [trial.number for trial in trials if trial.state == TrialState.FAIL] == [killed]
    # Ctrl+C: the search recorded its trial failed. SIGKILL: the rerun starts the missing trial at
    # once, and replaces the killed one once it has itself watched it stay silent.
    planned = "2 of 3 trials to run" if stop == signal.SIGINT else "1 of 3 trials to run"
    assert planned in again.stdout + again.stderr
    # killed: no metrics.json; Ctrl+C: status interrupted once training had started, else none
    allowed = {"failed"} if stop == signal.SIGKILL else {"failed", "interrupted"}
    assert summary_rows(tmp_path)[str(killed)]["status"] in allowed

    finished = search(tiny_data, tmp_path, *overrides[2:])  # nothing left: reports the best and exits 0

    assert len(load_study(tmp_path).trials) == len(trials)
    console = finished.stdout + finished.stderr
    assert "0 of 3 trials to run" in console and "best trial" in console
    # Each finished trial (its dropout drawn from the search space) is the run its settings make,
    # as if no search had been killed: the same best validation accuracy and test results.
    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        alone = tmp_path / f"alone_{trial.number}"
        settings = [f"{key}={value}" for key, value in trial.params.items()]
        result = run_train(tiny_data, alone, "trainer.max_epochs=4", *settings)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics, alone_metrics = trial_metrics(tmp_path, trial.number), json.loads(
            (only_run_dir(alone) / "metrics.json").read_text())
        assert alone_metrics["val/acc_best"] == trial.value
        assert {key: alone_metrics[key] for key in ("test/acc", "test/loss", "epochs", "steps")} == \
            {key: metrics[key] for key in ("test/acc", "test/loss", "epochs", "steps")}


def stop_outside_transactions(process: subprocess.Popen, database: Path) -> None:
    """SIGSTOP `process` at a moment it holds no lock on the SQLite `database`: stopped inside a
    transaction, it would block every other worker (SQLite's locking, which no sweeper can undo)."""
    while True:
        process.send_signal(signal.SIGSTOP)
        connection = sqlite3.connect(database, timeout=0.1, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")  # refused while any other connection reads or writes
            connection.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        finally:
            connection.close()


@pytest.mark.slow
def test_a_stalled_search_whose_trial_another_worker_replaced_goes_on_and_writes_the_results(tiny_data, tmp_path):
    # The stalled search's trial takes the study's last place: the other worker must wait to see it silent.
    overrides = ["hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=none", *QUICK_HEARTBEAT]
    # Its trials train long enough that the job it is stopped in still has validations ahead,
    # where it learns its trial was taken over, however fast this machine trains.
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *train_arguments(
        tiny_data, tmp_path, "hparams_search=optuna", SMALL_NETS, *overrides, "trainer.max_epochs=30", multirun=True)]
    results = study_dir(tmp_path) / "optimization_results.yaml"
    with (tmp_path / "stalled.log").open("w") as output, subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT) as stalled:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not one_finished_one_training(tmp_path):
            time.sleep(0.5)
        [silent] = [trial.number for trial in load_study(tmp_path).trials if trial.state == TrialState.RUNNING]
        stop_outside_transactions(stalled, study_dir(tmp_path) / "study.db")  # its heartbeat stops with it
        try:
            other = search(tiny_data, tmp_path, *overrides, "trainer.max_epochs=4")
            results.unlink()
        finally:
            stalled.send_signal(signal.SIGCONT)
        stalled.wait(timeout=300)

    # Its job, resumed, stops in one line when it reports to the failed trial; the search itself tells and goes on.
    stalled_log = (tmp_path / "stalled.log").read_text()
    assert f"trial {silent}: another worker recorded it failed" in stalled_log, stalled_log[-3000:]
    assert f"trial {silent} was recorded failed by another worker" in stalled_log and "Traceback" not in stalled_log
    assert "waiting for their heartbeat" in other.stdout + other.stderr
    trials = load_study(tmp_path).trials
    assert [trial.number for trial in trials if trial.state == TrialState.FAIL] == [silent]
    assert sum(trial.state in FINISHED for trial in trials) == 2
    assert results.exists()  # written again by the search that stalled


@pytest.mark.slow
def test_a_search_whose_places_a_dead_search_holds_waits_then_replaces_its_trials(tiny_data, tmp_path):
    study_dir(tmp_path).mkdir(parents=True)
    dead = sqlite_study(study_dir(tmp_path)).ask()
    dead.set_user_attr(HEARTBEAT, time.time())  # as searches before the heartbeat count wrote it

    result = search(tiny_data, tmp_path, "hydra.sweeper.n_trials=1", *QUICK_HEARTBEAT)

    assert "0 of 1 trials to run" in result.stdout + result.stderr
    assert f"trials [{dead.number}], running elsewhere" in result.stdout + result.stderr
    assert [trial.state for trial in load_study(tmp_path).trials] == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_a_search_whose_places_a_live_worker_holds_ends_once_it_has_seen_them_beat(tiny_data, tmp_path):
    study_dir(tmp_path).mkdir(parents=True)
    running = sqlite_study(study_dir(tmp_path)).ask()

    with heartbeat([running], interval_s=1):  # the other worker, alive
        result = search(tiny_data, tmp_path, "hydra.sweeper.n_trials=1", *QUICK_HEARTBEAT)

    assert f"trials [{running.number}], running elsewhere" in result.stdout + result.stderr
    assert "nothing to summarise" in result.stdout + result.stderr and "warn" not in result.stderr
    assert [trial.state for trial in load_study(tmp_path).trials] == [TrialState.RUNNING]  # left to its worker
    assert not (study_dir(tmp_path) / str(running.number)).exists()


@pytest.mark.slow
def test_joblib_and_submitit_workers_share_one_study_without_lost_or_duplicated_trials(tiny_data, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the cluster extra")
    # Hyperband here (median elsewhere): each job builds the pruner from the search's config.
    shared = ["hparams_search=optuna", SMALL_NETS, "hydra.sweeper.n_trials=5", "trainer.max_epochs=2",
              "hydra/sweeper/pruner=hyperband"]
    workers = {
        "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"],
        "submitit_local": ["hydra/launcher=submitit_local"],
    }
    processes = [subprocess.Popen([sys.executable, str(PROJECT_ROOT / "train.py"),
                                   *train_arguments(tiny_data, tmp_path, *shared, *launcher, multirun=True)],
                                  cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for launcher in workers.values()]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    trials = load_study(tmp_path).trials
    finished = [trial for trial in trials if trial.state in FINISHED]
    assert len(finished) == 5
    assert all(trial.state in (*FINISHED, TrialState.FAIL) for trial in trials)  # none left running
    launched_by = {}
    for trial in finished:  # each finished trial ran exactly once, in its own folder
        job_dir = study_dir(tmp_path) / str(trial.number)
        assert trial_metrics(tmp_path, trial.number)["status"] in ("completed", "pruned")
        assert OmegaConf.load(job_dir / ".hydra" / "config.yaml").optuna_trial == trial.number
        launched_by[trial.number] = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.launcher._target_
    assert {target.rsplit(".", 1)[-1] for target in launched_by.values()} == {"JoblibLauncher", "LocalLauncher"}
    unlaunched = [trial for trial in trials if trial.state == TrialState.FAIL]
    assert all(trial.user_attrs["status"] == "surplus" for trial in unlaunched)
    assert not any((study_dir(tmp_path) / str(trial.number)).exists() for trial in unlaunched)
    assert os.path.exists(study_dir(tmp_path) / "optimization_results.yaml")


@pytest.mark.slow
def test_a_journal_file_storage_holds_the_study_for_clusters_on_nfs(tiny_data, tmp_path):
    journal = ("hydra.sweeper.storage={_target_:optuna.storages.JournalStorage,"
               "log_storage:{_target_:optuna.storages.journal.JournalFileBackend,"
               "file_path:${hydra.sweep.dir}/journal.log}}")
    search(tiny_data, tmp_path, journal, "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner.n_startup_trials=1")

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir(tmp_path) / "journal.log")))
    trials = optuna.load_study(study_name="mnist-cnn", storage=storage).trials
    assert not (study_dir(tmp_path) / "study.db").exists()
    assert len(trials) == 3 and all(trial.state in FINISHED for trial in trials)
    for trial in trials:  # each job reported its validations to the journal, for the pruner
        assert len(trial.intermediate_values) == trial_metrics(tmp_path, trial.number)["epochs"] >= 1


@pytest.mark.parametrize("lost_race", [
    sqlalchemy_exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists")),
    sqlalchemy_exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed")),
], ids=["tables", "schema_version"])
def test_a_worker_that_loses_the_race_to_create_a_new_sqlite_study_tries_again(tmp_path, monkeypatch, lost_race):
    # Two workers opening a new database at once: the one whose writes collide is told so once.
    opened = []
    real_storage = optuna.storages.RDBStorage

    def collide_first(url, **kwargs):
        opened.append(url)
        if len(opened) == 1:
            raise lost_race
        return real_storage(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", collide_first)
    monkeypatch.setattr(_storage.time, "sleep", lambda seconds: None)
    storage = _storage.open_storage(f"sqlite:///{tmp_path}/study/study.db")
    assert len(opened) == 2 and isinstance(storage, real_storage)
    assert (tmp_path / "study" / "study.db").exists()


def sqlite_study(folder: Path, storage=None) -> "optuna.Study":
    """A study in a real SQLite file, as the search keeps it."""
    return optuna.create_study(storage=storage or f"sqlite:///{folder}/study.db", study_name="mnist-cnn",
                               direction="maximize")


def finished_job(folder: Path, metrics: dict) -> JobReturn:
    """What the launcher returns for a job whose run folder holds `metrics`."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return JobReturn(hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(folder)}}}))


def warnings_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_a_trial_another_worker_recorded_failed_is_told_with_one_warning(tmp_path, caplog):
    study = sqlite_study(tmp_path)
    trial = study.ask()
    optuna.load_study(study_name="mnist-cnn", storage=f"sqlite:///{tmp_path}/study.db").tell(
        trial.number, state=TrialState.FAIL)  # the other worker: this trial's heartbeat had stopped
    job = finished_job(tmp_path / "0", {"status": "completed", "val/acc_best": 0.9, "epochs": 2})

    with caplog.at_level(logging.WARNING):
        status = tell(study, trial, job, "val/acc_best")

    assert status == "completed"
    [warning] = warnings_logged(caplog)
    assert "trial 0" in warning and "another worker recorded it failed" in warning and "\n" not in warning
    assert study.trials[0].state == TrialState.FAIL


def test_a_heartbeat_the_storage_refuses_is_logged_and_lands_at_a_later_interval(tmp_path, caplog):
    class LockedForThreeBeats(optuna.storages.RDBStorage):
        refusals_left = 3

        def set_trial_user_attr(self, trial_id, key, value):
            if key == HEARTBEAT and self.refusals_left:
                self.refusals_left -= 1
                raise sqlalchemy_exc.OperationalError("UPDATE trial_user_attributes", {},
                                                      Exception("database is locked"))
            super().set_trial_user_attr(trial_id, key, value)

    storage = LockedForThreeBeats(f"sqlite:///{tmp_path}/study.db")
    study = sqlite_study(tmp_path, storage)
    trial = study.ask()

    with caplog.at_level(logging.WARNING), heartbeat([trial], interval_s=0.05):
        deadline = time.monotonic() + 10
        while HEARTBEAT not in study.trials[0].user_attrs and time.monotonic() < deadline:
            time.sleep(0.05)

    assert storage.refusals_left == 0 and HEARTBEAT in study.trials[0].user_attrs
    refused = warnings_logged(caplog)
    assert len(refused) == 3 and all("trial 0" in line and "database is locked" in line for line in refused)
    assert not any("\n" in line for line in refused)


def test_a_running_trial_is_judged_by_its_heartbeat_changing_not_by_the_clock_that_wrote_it(tmp_path):
    study = sqlite_study(tmp_path)
    # Heartbeats from searches made before the counter: seconds on clocks far ahead of and behind this one.
    ahead, behind, beating = study.ask(), study.ask(), study.ask()
    ahead.set_user_attr(HEARTBEAT, time.time() + 1e6)
    behind.set_user_attr(HEARTBEAT, time.time() - 1e6)
    watch = SilenceWatch(grace_period_s=0.5)

    assert watch.fail_silent(study) == []  # a first look judges nothing: a clock ahead or behind says nothing
    for beats in range(1, 3):
        time.sleep(0.3)
        beating.set_user_attr(HEARTBEAT, beats)
        silent = watch.fail_silent(study)

    assert silent == [ahead.number, behind.number]  # still for 0.6 s of this worker's own clock
    states = {trial.number: trial.state for trial in study.trials}
    assert states == {ahead.number: TrialState.FAIL, behind.number: TrialState.FAIL, beating.number: TrialState.RUNNING}


@pytest.mark.slow
def test_a_search_refuses_a_folder_of_trials_its_study_does_not_know(tiny_data, tmp_path):
    overrides = ["hydra.sweeper.n_trials=1", "hydra/sweeper/pruner=none", "trainer.max_epochs=1"]
    search(tiny_data, tmp_path, *overrides)
    finished = trial_metrics(tmp_path, 0)
    (study_dir(tmp_path) / "study.db").unlink()  # a new study of the same name: its trial 0 is another trial

    again = run_train(tiny_data, tmp_path, "hparams_search=optuna", SMALL_NETS, *overrides, multirun=True)

    assert again.returncode == 1
    output = again.stdout + again.stderr
    assert "holds trial folders [0] that study mnist-cnn does not know" in output and "Traceback" not in output
    assert trial_metrics(tmp_path, 0) == finished
