"""The README is the test plan: every command in its code blocks (and in docs/cluster.md) runs as
written, in a fresh clone with the real MNIST files in its data/, with its defaults: no
log_dir, no --config-dir, no tiny data. Only overrides that shorten a run are appended, and the
placeholders (<run>, <file>, digit.png, ...) are filled in with files earlier commands made."""

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, draw_digit, make_user_checkout, run_in_checkout

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

# What is appended to shorten a run: one epoch of a few batches; a study of a few trials.
SHORT_TRAINING = ["++trainer.max_epochs=1", "++trainer.limit_train_batches=8", "++trainer.limit_val_batches=2",
                  "++trainer.limit_test_batches=2"]
SHORT_TEST = ["++trainer.limit_test_batches=2"]
# Commands that submit to SLURM: they run on the cluster of scripts/local_cluster.py.
NEEDS_CLUSTER = "hydra/launcher=submitit_slurm"
# Commands the suite is, or that built the environment it runs in.
NOT_RUN = {"pip": "installs the environment these tests run in", "pytest": "is this test suite"}
SERVERS = ("tensorboard", "optuna-dashboard", "mlflow")


def commands_in(document: Path) -> list[str]:
    """The command lines of a Markdown file's indented code blocks, continuations joined."""
    commands, in_block, previous_blank = [], False, True
    for line in document.read_text().replace("\\\n", "").splitlines():
        if line.startswith("    ") and (in_block or previous_blank):
            in_block = True
            program = line.split()[0]  # output samples and folder trees are not commands
            if program in ("python", *NOT_RUN, *SERVERS) or shutil.which(program):
                commands.append(shlex.join(shlex.split(line, comments=True)))
        elif line.strip():
            in_block = False
        previous_blank = not line.strip()
    return commands


README_COMMANDS = commands_in(PROJECT_ROOT / "README.md")
CLUSTER_COMMANDS = commands_in(PROJECT_ROOT / "docs" / "cluster.md")


def test_the_readme_runs_every_entry_point_with_its_defaults():
    """Each entry point, and each way of sweeping, has a README command that this file runs as typed."""
    runs = [command for command in README_COMMANDS if command.startswith("python ")]
    assert any(command == "python train.py" for command in runs)
    for script in ("eval.py", "predict.py", "export.py"):
        assert any(command.startswith(f"python {script} ") for command in runs), script
    for sweep in ("-m optimizer.lr=", "hydra/launcher=joblib", "hparams_search=optuna"):
        assert any(sweep in command and "python train.py" in command for command in runs), sweep
    assert {"tensorboard", "optuna-dashboard"} <= {command.split()[0] for command in README_COMMANDS}


def folders(parent: Path) -> set[Path]:
    return {path for path in parent.glob("*") if path.is_dir()} if parent.is_dir() else set()


def filled_in(command: str, checkout: Path) -> str:
    """The command with its placeholders replaced by files that earlier commands made."""
    runs = checkout / "logs" / "runs"
    if re.search(r"<run>|<date>_<time>|<file>|a\.ckpt", command):
        best = sorted(runs.glob("*/checkpoints/best.ckpt"), key=lambda path: path.stat().st_mtime)
        for name, source in (("a.ckpt", best[0]), ("b.ckpt", best[-1])):
            shutil.copy(source, checkout / name)
        newest_run = best[-1].parent.parent.name
        command = command.replace("<run>", newest_run).replace("<date>_<time>", newest_run)
        command = command.replace("<file>", str(best[-1].relative_to(checkout)))
    for name, digit in (("digit.png", 7), ("one.jpg", 1), ("seven.png", 7)):
        if name in command:
            draw_digit(checkout / name, digit)
    if "my_digits/" in command:
        (checkout / "my_digits").mkdir(exist_ok=True)
        draw_digit(checkout / "my_digits" / "one.png", 1)
        draw_digit(checkout / "my_digits" / "seven.png", 7)
    return command


def shortened(words: list[str]) -> list[str]:
    """`words` with the overrides appended that shorten what it runs, and nothing else."""
    if words[1] == "eval.py":
        return [*words, *SHORT_TEST]
    if words[1] != "train.py":
        return words
    if "hparams_search=optuna" in words:
        # Each search command grows the study by a trial or two: it always has trials to run.
        trials = 2 + any("n_trials" in word for word in words) + 2 * ("hydra/launcher=joblib" in words)
        return [*words, *SHORT_TRAINING, f"hydra.sweeper.n_trials={trials}"]
    return [*words, *SHORT_TRAINING]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetched(url: str, timeout_s: float = 60) -> str:
    """The page at `url`, once the server behind it answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def serve_and_fetch(words: list[str], checkout: Path) -> str:
    """Start the server a README command starts, on a free loopback port; the page it serves."""
    port = free_port()
    executable = Path(sys.executable).with_name(words[0])
    page = {"tensorboard": "/data/runs", "optuna-dashboard": "/api/studies",
            "mlflow": "/api/2.0/mlflow/experiments/search?max_results=100"}[words[0]]
    server = subprocess.Popen([str(executable), *words[1:], "--host", "127.0.0.1", "--port", str(port)],
                              cwd=checkout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return fetched(f"http://127.0.0.1:{port}{page}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def check_outputs(words: list[str], checkout: Path, result: subprocess.CompletedProcess, before: dict) -> None:
    """Where the command's outputs landed, and the line it ends with."""
    logs = checkout / "logs"
    last_line = (result.stdout.strip().splitlines() or [""])[-1]
    new = {kind: folders(logs / kind) - before[kind] for kind in before}
    if words[1] == "predict.py":
        assert re.fullmatch(r"\{.*\}|\S+: \S+ +\(.*\)", last_line), last_line
        assert not any(new.values()), new  # no run folder: only the figure of each image read
        assert any((checkout / "figures").glob("*_read.png"))
    elif words[1] == "eval.py":
        [evaluation] = new["evals"]
        run_dirs = [path for path in evaluation.iterdir() if path.is_dir()] if "-m" in words else [evaluation]
        assert len(run_dirs) == (2 if "-m" in words else 1), run_dirs
        for run_dir in run_dirs:
            assert "test/acc" in json.loads((run_dir / "metrics.json").read_text())
        assert last_line.startswith(f"run folder: {evaluation}"), last_line
    elif words[1] != "train.py" or {"--cfg", "--help"} & set(words):
        assert not any(new.values()), new
    elif "hparams_search=optuna" in words:
        study = logs / "optuna" / "mnist-cnn"
        assert (study / "study.db").is_file() and (study / "summary.md").is_file()
        assert f"sweep summary: {study / 'summary.md'}" in result.stdout + result.stderr
    elif "-m" in words or "experiment=lr_batch_channels_grid" in words:
        [sweep] = new["multiruns"]
        assert (sweep / "summary.md").is_file() and (sweep / "multirun.yaml").is_file()
        jobs = [path for path in sweep.iterdir() if (path / "metrics.json").is_file()]
        assert jobs and all(json.loads((job / "metrics.json").read_text())["status"] == "completed" for job in jobs)
        assert f"sweep summary: {sweep / 'summary.md'}" in result.stdout + result.stderr
    elif any(word.startswith(("ckpt_path=", "resume=")) for word in words):
        assert not new["runs"], new  # the run it names completed: nothing to resume, nothing new
        assert "nothing to resume" in last_line, last_line
    else:
        [run_dir] = new["runs"]
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
        assert last_line == f"run folder: {run_dir}", last_line


@pytest.fixture(scope="module")
def readme_checkout(tmp_path_factory, real_mnist_dir) -> Path:
    """One clone that runs the document's commands in order, as a user would, one after the other."""
    return make_user_checkout(tmp_path_factory.mktemp("readme") / "mnist-cnn", real_mnist_dir)


def run_as_documented(command: str, checkout: Path, request: pytest.FixtureRequest) -> None:
    words = shlex.split(command)
    if NEEDS_CLUSTER in words:
        request.getfixturevalue("local_cluster")
    if words[0] in NOT_RUN:
        pytest.skip(f"{command}: {NOT_RUN[words[0]]}")
    if words[0] in SERVERS:
        page = serve_and_fetch(words, checkout)
        # The study, or the runs' MLflow experiment, by name; TensorBoard's list of runs.
        assert "mnist-cnn" in page if words[0] != "tensorboard" else json.loads(page), page[:500]
        return
    words = shortened(shlex.split(filled_in(command, checkout)))
    before = {kind: folders(checkout / "logs" / kind) for kind in ("runs", "multiruns", "evals")}

    result = run_in_checkout(checkout, words, timeout_s=900)

    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{shlex.join(words)}\n{output[-4000:]}"
    assert "Traceback" not in output, output[-4000:]
    check_outputs(words, checkout, result, before)


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_command_runs_as_written(command, readme_checkout, request):
    run_as_documented(command, readme_checkout, request)


@pytest.mark.parametrize("command", CLUSTER_COMMANDS)
def test_cluster_guide_command_runs_as_written(command, readme_checkout, request):
    run_as_documented(command, readme_checkout, request)
