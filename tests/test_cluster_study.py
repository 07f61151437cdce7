"""An Optuna study in the PostgreSQL server of scripts/local_cluster.py, as on a cluster: shared by
two SLURM workers, one of them cancelled in the middle of a trial, and served by optuna-dashboard.
Each test has a database of its own, so no two tests share a study."""

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, train_arguments
from sqlalchemy.engine import make_url
from test_optuna_search import FINISHED, QUICK_HEARTBEAT, SMALL_NETS, search

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
psycopg = pytest.importorskip("psycopg", reason="needs the cluster extra: pip install -e '.[cluster]'")
from optuna.trial import TrialState
from psycopg import sql

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

STUDY_NAME = "mnist-cnn"  # conf/hparams_search/optuna.yaml
N_TRIALS = 4
# Trials of a few seconds: from its first validation to its end, the fastest still has seconds to be cancelled in.
SEARCH = (f"hydra.sweeper.n_trials={N_TRIALS}", "hydra.sweeper.pruner.n_startup_trials=1", "trainer.max_epochs=40",
          "threads=1", *QUICK_HEARTBEAT)


def database_url(cluster_storage: str, name: str) -> str:
    """Database `name` on the cluster's server, as a user writes its URL: `postgresql://`, no driver named."""
    return make_url(cluster_storage).set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def with_psycopg(url: str) -> str:
    """The same URL naming the psycopg (3) driver, which every SQLAlchemy 2 takes as it is."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture
def database(local_cluster) -> Iterator[str]:
    """A new, empty database on the cluster's server, for this test's study alone; its URL as a
    user writes it. Dropped afterwards, with whatever connections still hold it open."""
    name = f"study_{uuid.uuid4().hex[:12]}"
    server = database_url(local_cluster, "postgres")
    with psycopg.connect(server, autocommit=True) as connection:  # CREATE DATABASE refuses a transaction
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url(local_cluster, name)
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def load_study(url: str) -> "optuna.Study":
    return optuna.load_study(study_name=STUDY_NAME, storage=with_psycopg(url))


@pytest.fixture
def slurm_jobs() -> Iterator[list[str]]:
    """The ids of the jobs a test submits: those still queued or running when it ends are cancelled."""
    job_ids: list[str] = []
    yield job_ids
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False, capture_output=True)  # ended ones: a no-op


def sbatch(command: list[str], output: Path, slurm_jobs: list[str]) -> str:
    """Submit `command` as a one-CPU batch job writing its output to `output`; its job id."""
    submitted = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", f"--output={output}",
                                "--wrap", shlex.join(command)],
                               cwd=PROJECT_ROOT, check=True, capture_output=True, text=True)
    slurm_jobs.append(submitted.stdout.strip().split(";")[0])
    return slurm_jobs[-1]


def in_queue(job_ids: list[str]) -> set[str]:
    """The jobs of `job_ids` that SLURM still lists: pending, running or completing."""
    listed = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], check=True, capture_output=True,
                            text=True)
    return set(listed.stdout.split())


def job_state(job_id: str) -> tuple[str, str]:
    """(JobState, ExitCode) of a job that ended a moment ago (sacct needs accounting; scontrol
    knows an ended job for MinJobAge, 300 s by default)."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], check=True, capture_output=True, text=True)
    fields = dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)
    return fields["JobState"], fields["ExitCode"]


def launched_trials(output: Path) -> set[int]:
    """The trials a worker launched, from the job line Hydra logs for each (`... optuna_trial=<n>`)."""
    text = output.read_text() if output.exists() else ""
    return {int(number) for number in re.findall(r"\boptuna_trial=(\d+)\b", text)}


def outputs(paths: list[Path]) -> str:
    return "\n".join(f"--- {path.name}:\n{path.read_text()[-3000:] if path.exists() else '(none)'}" for path in paths)


def test_two_slurm_workers_share_a_postgresql_study_and_a_rerun_replaces_the_cancelled_ones_trial(
        tiny_data, tmp_path, database, slurm_jobs):
    command = [sys.executable, str(PROJECT_ROOT / "train.py"),
               *train_arguments(tiny_data, tmp_path, "hparams_search=optuna", SMALL_NETS, *SEARCH,
                                f"hydra.sweeper.storage={database}", multirun=True)]
    # Opened (and its tables created) before the workers start: opening it takes a second or more,
    # too long to wait for once a trial trains.
    storage = optuna.storages.RDBStorage(with_psycopg(database))
    logs = {worker: tmp_path / f"worker_{worker}.out" for worker in ("a", "b")}
    jobs = {worker: sbatch(command, log, slurm_jobs) for worker, log in logs.items()}

    # Wait for a trial in the middle of training: running, with a validation reported to the study.
    deadline, study, cancelled = time.monotonic() + 300, None, None
    while cancelled is None:
        assert time.monotonic() < deadline, "no trial reached its first validation\n" + outputs(list(logs.values()))
        launched = {worker: launched_trials(log) for worker, log in logs.items()}
        if study is None and any(launched.values()):  # a trial launched: the study exists
            study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        running = [] if study is None else study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in running:
            owner = [worker for worker, numbers in launched.items() if trial.number in numbers]
            if trial.intermediate_values and owner:
                cancelled, [cancelled_worker] = trial.number, owner
                break
        else:
            time.sleep(0.1)
    subprocess.run(["scancel", jobs[cancelled_worker]], check=True)
    deadline = time.monotonic() + 300
    while in_queue(list(jobs.values())):
        assert time.monotonic() < deadline, "the workers did not end\n" + outputs(list(logs.values()))
        time.sleep(1)

    [surviving_worker] = set(jobs) - {cancelled_worker}
    assert job_state(jobs[cancelled_worker])[0] == "CANCELLED", outputs([logs[cancelled_worker]])
    assert job_state(jobs[surviving_worker]) == ("COMPLETED", "0:0"), outputs([logs[surviving_worker]])
    assert launched_trials(logs[surviving_worker]), "the surviving worker ran no trial"

    search(tiny_data, tmp_path, *SEARCH, f"hydra.sweeper.storage={database}")  # the same command again

    trials = load_study(database).trials
    finished = [trial for trial in trials if trial.state in FINISHED]
    assert len(finished) == N_TRIALS
    failed = [trial.number for trial in trials
              if trial.state == TrialState.FAIL and trial.user_attrs.get("status") != "surplus"]
    assert failed == [cancelled]
    assert all(trial.state in (*FINISHED, TrialState.FAIL) for trial in trials)  # none left running
    for trial in finished:  # each job reported every validation to PostgreSQL, for the pruner
        assert len(trial.intermediate_values) == trial.user_attrs["epochs"] >= 1, trial


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@contextmanager
def dashboard(storage: str, log: Path, timeout_s: float = 60) -> Iterator[str]:
    """`optuna-dashboard <storage>` on a free loopback port, once it answers; its base URL."""
    base_url = f"http://127.0.0.1:{(port := free_port())}"
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", "127.0.0.1",
               "--port", str(port)]
    with log.open("w") as output, subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT) as server:
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                assert server.poll() is None, f"optuna-dashboard exited: {log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"optuna-dashboard did not answer: {log.read_text()[-3000:]}"
                try:
                    get_json(f"{base_url}/api/meta")
                    break
                except OSError:  # not listening yet
                    time.sleep(0.3)
            yield base_url
        finally:
            server.kill()


def test_optuna_dashboard_serves_every_trial_of_a_postgresql_study(tiny_data, tmp_path, database):
    search(tiny_data, tmp_path, "hydra.sweeper.n_trials=3", "trainer.max_epochs=2", "threads=1",
           f"hydra.sweeper.storage={database}")
    trials = load_study(database).trials
    assert len(trials) == 3 and all(trial.state in FINISHED for trial in trials)

    with dashboard(with_psycopg(database), tmp_path / "dashboard.log") as base_url:
        [study] = [study for study in get_json(f"{base_url}/api/studies")["study_summaries"]
                   if study["study_name"] == STUDY_NAME]
        served = get_json(f"{base_url}/api/studies/{study['study_id']}")["trials"]

    assert [(trial["number"], trial["state"], trial.get("values")) for trial in served] == [
        (trial.number, trial.state.name.capitalize(), trial.values) for trial in trials]
    for trial, shown in zip(trials, served):
        assert {point["step"]: point["value"] for point in shown["intermediate_values"]} == trial.intermediate_values
