"""Every tracker of the logger group receives the run: hyperparameters, every metric at its step,
the figures and the run's files. A resumed run continues the same tracker run and logs exactly
what the uninterrupted run logs; a sweep's jobs are grouped by sweep.

MLflow is a real `mlflow server` queried over its REST API; W&B runs offline, and its run files
are read back with W&B's own record format."""

import csv
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    NO_INTERRUPT,
    PROBES,
    TEST_FIGURES,
    interrupt_at,
    only_run_dir,
    only_sweep_dir,
    read_tensorboard,
    run_train,
)
from lightning.pytorch.loggers import mlflow as lightning_mlflow
from lightning_utilities.core.imports import RequirementCache
from omegaconf import OmegaConf

from mnist_cnn.experiment_trackers import build_loggers
from mnist_cnn.schema import ConfigError

pytest.importorskip("mlflow", reason="needs the trackers extra: pip install -e '.[trackers]'")
pytest.importorskip("wandb", reason="needs the trackers extra: pip install -e '.[trackers]'")

DENSE = ("trainer.log_every_n_steps=1",)
# Files a tracker that keeps files receives from every run.
RUN_FILES = {"metrics.json", "run_config.yaml"}
OFFLINE_WANDB = {"WANDB_API_KEY": "", "NETRC": "/nonexistent"}  # not logged in, whatever this machine holds


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> str:
    """A real MLflow tracking server on a free loopback port; its URI."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=(folder / "server.log").open("w"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, (folder / "server.log").read_text()[-3000:]
            time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)


def mlflow_api(server: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """One call of MLflow's REST API: GET with `query`, or POST `body`."""
    url = f"{server}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def mlflow_runs(server: str, run_dir: Path) -> list[dict]:
    """The MLflow runs tagged with `run_dir`, in any experiment."""
    experiments = mlflow_api(server, "experiments/search", {"max_results": 1000})["experiments"]
    return mlflow_api(server, "runs/search", {
        "experiment_ids": [experiment["experiment_id"] for experiment in experiments],
        "filter": f"tags.run_dir = '{run_dir}'"}).get("runs", [])


def mlflow_run(server: str, run_id: str) -> dict:
    """A run's params, every metric's history (step -> value, in logging order) and artifact paths."""
    run = mlflow_api(server, "runs/get", run_id=run_id)["run"]
    metrics = {}
    for metric in run["data"].get("metrics", []):
        history = mlflow_api(server, "metrics/get-history", run_id=run_id, metric_key=metric["key"],
                             max_results=25000)["metrics"]
        metrics[metric["key"]] = [(point.get("step", 0), point["value"]) for point in history]

    def artifacts(path: str = "") -> list[str]:
        listed = mlflow_api(server, "artifacts/list", run_id=run_id, **({"path": path} if path else {}))
        found = []
        for entry in listed.get("files", []):
            found += artifacts(entry["path"]) if entry["is_dir"] else [entry["path"]]
        return found

    return {"info": run["info"], "params": {param["key"]: param["value"] for param in run["data"]["params"]},
            "tags": {tag["key"]: tag["value"] for tag in run["data"]["tags"]},
            "metrics": metrics, "artifacts": set(artifacts())}


def wandb_records(run_file: Path):
    """The protobuf records of a W&B run file (run-<id>.wandb): a 7-byte header, then records in
    32 KiB blocks, each chunk with a 7-byte header (checksum, length, kind: whole, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    position, pieces = header, b""
    while position + header <= len(data):
        room = block - position % block
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + header])
        if room < header or (length == 0 and kind == 0):  # the end of a block is padding
            position += room
            continue
        pieces += data[position + header:position + header + length]
        position += header + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def wandb_run(run_dir: Path) -> dict:
    """What W&B recorded offline under `run_dir`, over all its sessions (a resume adds one):
    run ids, config, every metric (trainer step -> value), images, saved files, sessions ended."""
    found = {"ids": set(), "config": {}, "metrics": {}, "images": set(), "files": set(), "exits": 0, "sessions": 0}
    for session in sorted((run_dir / "wandb").glob("offline-run-*")):
        found["sessions"] += 1
        found["files"] |= {path.relative_to(session / "files").as_posix()
                           for path in (session / "files").rglob("*") if path.is_file()}
        for record in wandb_records(only_child_matching(session, "run-*.wandb")):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["ids"].add(record.run.run_id)
            elif kind == "config":
                found["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
            elif kind == "exit":
                found["exits"] += 1
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                step = row.pop("trainer/global_step", None)
                images = {key.removesuffix("/_type") for key, value in row.items() if value == "images/separated"}
                found["images"] |= images
                for key, value in row.items():
                    if not key.startswith("_") and key.rsplit("/", 1)[0] not in images and step is not None:
                        found["metrics"].setdefault(key, []).append((step, value))
    return found


def only_child_matching(folder: Path, pattern: str) -> Path:
    matches = list(folder.glob(pattern))
    assert len(matches) == 1, matches
    return matches[0]


def csv_metrics(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as tag -> [(step, value)], in the order the rows were written."""
    series: dict[str, list[tuple[int, float]]] = {}
    with (log_dir / "metrics.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                if key != "step" and value:
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    return series


def hyperparameter_settings(run_dir: Path) -> dict:
    return OmegaConf.load(run_dir / ".hydra" / "config.yaml")


def assert_same_series(series: list[tuple[int, float]], expected: list[tuple[int, float]], tag: str) -> None:
    """The same values at the same steps (TensorBoard keeps float32: equal to its precision)."""
    assert [step for step, _ in series] == [step for step, _ in expected], tag
    assert [value for _, value in series] == pytest.approx([value for _, value in expected], rel=1e-6), tag


def assert_run_received(run_dir: Path, params: dict, metrics: dict, images: set[str], files: set[str]) -> None:
    """A tracker received the run: its hyperparameters, every TensorBoard tag at TensorBoard's
    steps with TensorBoard's values, the figures, and the run's files."""
    settings = hyperparameter_settings(run_dir)
    assert str(params["seed"]) == str(settings.seed) and str(params["optimizer/lr"]) == str(settings.optimizer.lr)
    assert str(params["model/channels"]) == str(list(settings.model.channels))
    tensorboard = read_tensorboard(run_dir)[0]
    assert tensorboard.keys() <= metrics.keys()
    for tag, points in tensorboard.items():
        assert_same_series(metrics[tag], points, tag)
    assert TEST_FIGURES | {"train/samples"} <= images
    assert files >= RUN_FILES
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/acc"][-1][1] == pytest.approx(recorded["test/acc"])


@pytest.mark.slow
def test_csv_logger_writes_every_metric_at_its_step(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "logger=csv", *DENSE)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    series = csv_metrics(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [step for step, _ in series["train/loss_step"]] == list(range(metrics["steps"]))
    assert series["test/acc"] == [(metrics["steps"], pytest.approx(metrics["test/acc"]))]
    assert max(value for _, value in series["val/acc"]) == pytest.approx(metrics["val/acc_best"])
    hparams = OmegaConf.load(run_dir / "hparams.yaml")
    assert hparams.seed == 42 and hparams["optimizer/lr"] == hyperparameter_settings(run_dir).optimizer.lr
    assert not list(run_dir.glob("events.out.tfevents.*"))  # the tracker chosen, not TensorBoard as well


@pytest.mark.slow
def test_mlflow_server_receives_params_every_metric_figures_and_files(tiny_data, tmp_path, mlflow_server):
    # The TensorBoard logger beside it is the reference for what MLflow must hold.
    result = run_train(tiny_data, tmp_path, "logger=many", "~logger.csv", "~logger.wandb",
                       f"logger.mlflow.tracking_uri={mlflow_server}", *DENSE)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    [found] = mlflow_runs(mlflow_server, run_dir)
    run = mlflow_run(mlflow_server, found["info"]["run_id"])
    assert run["info"]["status"] == "FINISHED" and run["info"]["run_name"] == run_dir.name
    figures = {path.removeprefix("figures/").removesuffix(".png").replace("_", "/", 1)
               for path in run["artifacts"] if path.startswith("figures/")}
    assert_run_received(run_dir, run["params"], run["metrics"], figures, run["artifacts"])


@pytest.mark.slow
def test_wandb_offline_run_files_hold_the_run(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "logger=many", "~logger.csv", "~logger.mlflow", *DENSE,
                       env=OFFLINE_WANDB)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    run = wandb_run(run_dir)
    assert run["sessions"] == run["exits"] == 1 and len(run["ids"]) == 1  # one run, closed
    assert_run_received(run_dir, run["config"], run["metrics"], run["images"], run["files"])


@pytest.mark.slow
def test_many_loggers_at_once(tiny_data, tmp_path, mlflow_server):
    result = run_train(tiny_data, tmp_path, "logger=many", f"logger.mlflow.tracking_uri={mlflow_server}", *DENSE,
                       env=OFFLINE_WANDB)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    tensorboard = read_tensorboard(run_dir)[0]
    assert tensorboard["train/loss_step"]
    [found] = mlflow_runs(mlflow_server, run_dir)
    received = {"csv": csv_metrics(run_dir / "csv"), "wandb": wandb_run(run_dir)["metrics"],
                "mlflow": mlflow_run(mlflow_server, found["info"]["run_id"])["metrics"]}
    for tracker, metrics in received.items():
        for tag, points in tensorboard.items():
            assert_same_series(metrics[tag], points, f"{tracker}: {tag}")


def logged(run_dir: Path, server: str) -> dict[str, dict]:
    """Every tracker's metrics for the run in `run_dir`, and the tracker run ids."""
    [found] = mlflow_runs(server, run_dir)
    wandb = wandb_run(run_dir)
    return {"tensorboard": read_tensorboard(run_dir)[0], "csv": csv_metrics(run_dir / "csv"),
            "mlflow": mlflow_run(server, found["info"]["run_id"])["metrics"], "wandb": wandb["metrics"],
            "ids": {"mlflow": found["info"]["run_id"], "wandb": wandb["ids"]}}


@pytest.mark.slow
def test_each_tracker_continues_a_resumed_run_as_if_never_stopped(tiny_data, tmp_path, mlflow_server):
    trackers = ("logger=many", f"logger.mlflow.tracking_uri={mlflow_server}", *DENSE)
    env = {**PROBES, **OFFLINE_WANDB}
    uninterrupted = run_train(tiny_data, tmp_path / "uninterrupted", *trackers, env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    expected = logged(only_run_dir(tmp_path / "uninterrupted"), mlflow_server)

    stopped = run_train(tiny_data, tmp_path / "resumed", *trackers, *interrupt_at(13, "SIGTERM"), env=env)
    assert stopped.returncode != 0 and "Resume with" in stopped.stderr, stopped.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "resumed")
    mlflow_before = mlflow_runs(mlflow_server, run_dir)[0]["info"]["run_id"]
    resumed = run_train(tiny_data, tmp_path / "resumed", *trackers, "resume=latest", *interrupt_at(13, "SIGTERM"),
                        NO_INTERRUPT, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    continued = logged(run_dir, mlflow_server)
    assert continued["ids"]["mlflow"] == mlflow_before  # the same MLflow run, and one W&B run id
    assert len(continued["ids"]["wandb"]) == 1 and wandb_run(run_dir)["sessions"] == 2
    for tracker in ("tensorboard", "csv", "mlflow", "wandb"):
        # Every metric at the same steps with the same values: no step twice, none missing.
        assert continued[tracker].keys() == expected[tracker].keys(), tracker
        for tag, points in expected[tracker].items():
            assert_same_series(continued[tracker][tag], points, f"{tracker}: {tag}")


@pytest.mark.slow
def test_sweep_jobs_are_runs_grouped_by_sweep(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "logger=many", "~logger.tensorboard", "~logger.csv",
                       f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "optimizer.lr=0.001,0.003",
                       multirun=True, env=OFFLINE_WANDB)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    group = f"multiruns/{sweep_dir.name}"

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name(group)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["lr=0.001", "lr=0.003"]
    assert {run.data.tags["run_dir"] for run in runs} == {str(sweep_dir / "0"), str(sweep_dir / "1")}
    for job in ("0", "1"):
        wandb = wandb_run(sweep_dir / job)
        assert wandb["exits"] == 1  # every W&B run ends with its job
        session = only_child_matching(sweep_dir / job / "wandb", "offline-run-*")
        [record] = [record for record in wandb_records(only_child_matching(session, "run-*.wandb"))
                    if record.WhichOneof("record_type") == "run"]
        assert record.run.run_group == group


def test_a_tracker_whose_package_is_missing_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(lightning_mlflow, "_MLFLOW_AVAILABLE", RequirementCache("mlflow>=999"))
    tracker = OmegaConf.create({"_target_": "lightning.pytorch.loggers.MLFlowLogger"})
    with pytest.raises(ConfigError, match=r"MLFlowLogger needs its package .*pip install -e '\.\[trackers\]'"):
        build_loggers(tracker)
