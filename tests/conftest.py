"""Shared test helpers: tiny synthetic MNIST-format datasets and `python train.py` runs."""

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image, ImageDraw

from mnist_cnn.config import record_project_root, register_resolvers
from mnist_cnn.mnist_files import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    raw_dir_of,
)

# The checkout under test: its scripts, its conf/ (and so the default logs/ and data/ beside it).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"
record_project_root(CONFIG_DIR)  # as the scripts do: configs composed here resolve to this checkout's paths


def write_idx(path: Path, values: torch.Tensor) -> str:
    """Write a uint8 tensor as an IDX file; returns its MD5."""
    header = struct.pack(">HBB", 0, 0x08, values.dim()) + struct.pack(f">{values.dim()}I", *values.shape)
    data = header + values.to(torch.uint8).contiguous().numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def learnable_digits(count: int, seed: int, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 28x28 images whose label is the position of a bright square: easy to learn.
    The first two pixels of image i hold i (high byte, low byte), so a test can tell which
    images a step trained on (tests/run_probes.py reads them back)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=generator)
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, col = divmod(label, 5)
        images[index, 4 + 10 * row:12 + 10 * row, 1 + 5 * col:6 + 5 * col] = 255
    ids = torch.arange(count)
    images[:, 0, 0], images[:, 0, 1] = ids // 256, ids % 256
    return images, labels


def write_tiny_mnist(raw_dir: Path, train_size: int = 400, test_size: int = 150, classes: int = 10
                     ) -> dict[str, str]:
    """The four IDX files with tiny learnable data; returns their MD5s by file name."""
    train_images, train_labels = learnable_digits(train_size, seed=1, classes=classes)
    test_images, test_labels = learnable_digits(test_size, seed=2, classes=classes)
    return {
        TRAIN_IMAGES: write_idx(raw_dir / TRAIN_IMAGES, train_images),
        TRAIN_LABELS: write_idx(raw_dir / TRAIN_LABELS, train_labels),
        TEST_IMAGES: write_idx(raw_dir / TEST_IMAGES, test_images),
        TEST_LABELS: write_idx(raw_dir / TEST_LABELS, test_labels),
    }


# Digits as polylines (pixel coordinates in a 123x97 image), drawn thick like a marker pen.
DIGIT_STROKES = {  # polylines in a 123x97 image
    0: [(60, 12), (80, 22), (85, 50), (78, 78), (60, 86), (42, 78), (35, 50), (40, 22), (60, 12)],
    1: [(50, 26), (64, 12), (64, 86)],
    2: [(35, 28), (55, 12), (78, 20), (80, 40), (35, 84), (90, 84)],
    4: [(72, 86), (72, 12), (30, 60), (92, 60)],
    7: [(30, 15), (95, 15), (50, 85)],
}


def draw_digit(path: Path, digit: int, size: tuple[int, int] = (123, 97), ink="black", paper="white",
               mode: str = "RGB") -> Path:
    """An image file (format from the suffix) of `digit` drawn with Pillow; returns its path."""
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).line(DIGIT_STROKES[digit], fill=ink, width=11, joint="curve")
    image.save(path)
    return path


def mnist_like(digit: int) -> torch.Tensor:
    """`digit` as an MNIST test image: uint8 (28, 28), white on black, about 20 pixels tall."""
    image = Image.new("L", (123, 123), 0)
    ImageDraw.Draw(image).line([(x, y + 13) for x, y in DIGIT_STROKES[digit]], fill=255, width=11, joint="curve")
    return torch.from_numpy(np.array(image.resize((28, 28), Image.Resampling.LANCZOS)))


@dataclass
class TinyData:
    data_dir: Path
    config_dir: Path  # holds conf/data/tiny.yaml, for `--config-dir`
    md5: dict[str, str]
    train_size: int
    test_size: int
    val_size: int


def make_tiny_data(root: Path, train_size: int = 400, test_size: int = 150, val_size: int = 80,
                   base: str = "mnist", dataset: str = "MNIST", class_names: list[str] | None = None) -> TinyData:
    """Tiny IDX files under `root/data` and a `data=tiny` config that points at them; it
    extends the `base` data config, with `class_names` (and as many classes) if given."""
    data_dir = root / "data"
    md5 = write_tiny_mnist(data_dir / dataset / "raw", train_size, test_size, len(class_names or range(10)))
    config_dir = root / "conf"
    (config_dir / "data").mkdir(parents=True)
    md5_lines = "".join(f"  {name}: {digest}\n" for name, digest in md5.items())
    names_line = f"class_names: {json.dumps(class_names)}\n" if class_names else ""
    (config_dir / "data" / "tiny.yaml").write_text(
        f"defaults:\n  - {base}\n  - _self_\n\ndata_dir: {data_dir}\nbatch_size: 32\n"
        f"val_size: {val_size}\n{names_line}md5:\n{md5_lines}"
    )
    return TinyData(data_dir, config_dir, md5, train_size, test_size, val_size)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    return make_tiny_data(tmp_path_factory.mktemp("tiny"))


def copy_checkout(destination: Path) -> Path:
    """A fresh clone of this checkout: its files as they are now, committed or not, less what git ignores."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        if (PROJECT_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, destination / name)
    return destination


@pytest.fixture(scope="session")
def local_cluster() -> str:
    """The one-machine SLURM cluster and PostgreSQL server of scripts/local_cluster.py, started
    as a user starts them (a no-op when .ci/run has); the Optuna storage URL of its database."""
    result = run_script("scripts/local_cluster.py", "up", timeout_s=600)
    if result.returncode != 0:
        pytest.fail(f"scripts/local_cluster.py up failed: {result.stderr.strip()}")
    [storage] = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("storage")]
    return storage


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The real MNIST files in this checkout's data/, fetched on first use as a first run fetches them."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        data = instantiate(compose("train").data)
    data.prepare_data()
    return raw_dir_of(data.data_dir, data.dataset)


def make_user_checkout(destination: Path, real_mnist_dir: Path) -> Path:
    """A fresh clone as a user has it after the first run fetched MNIST into its data/."""
    checkout = copy_checkout(destination)
    raw_dir = raw_dir_of(checkout / "data")
    raw_dir.mkdir(parents=True)
    for file in real_mnist_dir.iterdir():
        os.link(file, raw_dir / file.name)  # the same bytes, without a copy
    return checkout


@pytest.fixture
def user_checkout(tmp_path, real_mnist_dir) -> Path:
    return make_user_checkout(tmp_path / "mnist-cnn", real_mnist_dir)


def run_in_checkout(checkout: Path, command: list[str], timeout_s: int = 600) -> subprocess.CompletedProcess:
    """`command` as a user types it in `checkout`; `python` is this environment's, importing the
    checkout's own package (as its editable install would)."""
    if command[0] == "python":
        command = [sys.executable, *command[1:]]
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    return subprocess.run(command, cwd=checkout, check=False, capture_output=True, text=True, timeout=timeout_s,
                          env=env)


def run_script(script: str, *arguments: str, timeout_s: int = 300, env: dict | None = None,
               cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    """`python <script> <arguments>` as a user types it, with the project's scripts."""
    return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *arguments], cwd=cwd, check=False,
                          capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})})


def run_until_exit(command: list[str], timeout_s: float, env: dict) -> tuple[int | None, str]:
    """Run `command` in its own process group; (exit code, output), or (None, output) when it
    was still running after `timeout_s` and had to be killed with all its children."""
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None, process.communicate()[0]


def import_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module, for testing its functions without running it."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_arguments(tiny: TinyData, log_dir: Path, *overrides: str, multirun: bool = False) -> list[str]:
    """The arguments of `python train.py` on the tiny data, logging under `log_dir`."""
    return [*(["-m"] if multirun else []), "--config-dir", str(tiny.config_dir), "data=tiny",
            f"log_dir={log_dir}", "trainer=cpu", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
            *overrides]


# Data-parallel training in two processes on the CPU (gloo), as any machine can run it.
DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")


# The probe callbacks of tests/run_probes.py, importable by the runs a test starts.
PROBES = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}


def interrupt_at(step: int, signal_name: str, rank: int | None = None) -> list[str]:
    """The overrides that make a run (started with PROBES) send itself `signal_name` after `step` steps."""
    return ["+callbacks.interrupt._target_=run_probes.SignalAtStep", f"+callbacks.interrupt.at_step={step}",
            f"+callbacks.interrupt.signal_name={signal_name}",
            *([f"+callbacks.interrupt.rank={rank}"] if rank is not None else [])]


NO_INTERRUPT = "++callbacks.interrupt.at_step=-1"  # the resumed run goes on


def cpu_trainer(devices: int) -> L.Trainer:
    """A trainer of `devices` ranks on the CPU, for code that reads its settings; it never fits."""
    return L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def run_train(tiny: TinyData, log_dir: Path, *overrides: str, script: str = "train.py",
              multirun: bool = False, timeout_s: int = 300, env: dict | None = None,
              ) -> subprocess.CompletedProcess:
    """`python train.py` (`-m` with `multirun`) on the tiny data, as a user types it,
    logging under `log_dir`."""
    return run_script(script, *train_arguments(tiny, log_dir, *overrides, multirun=multirun),
                      timeout_s=timeout_s, env=env)


def run_eval(tiny: TinyData, log_dir: Path, ckpt_path: Path | str, *overrides: str) -> subprocess.CompletedProcess:
    """`python eval.py ckpt_path=<file>` on the tiny data, logging under `log_dir`."""
    return run_train(tiny, log_dir, f"ckpt_path={ckpt_path}", *overrides, script="eval.py")


def only_child(folder: Path) -> Path:
    children = sorted(folder.iterdir())
    assert len(children) == 1, children
    return children[0]


def only_run_dir(log_dir: Path, kind: str = "runs") -> Path:
    """The single run folder a single run created under `log_dir` (`kind`: runs or evals)."""
    return only_child(log_dir / kind)


def only_sweep_dir(log_dir: Path) -> Path:
    """The single sweep folder a multirun (`python train.py -m ...`) created under `log_dir`."""
    return only_child(log_dir / "multiruns")


@pytest.fixture(scope="session")
def finished_run(tiny_data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny training run with non-default channels, shared by the tests that read its outputs."""
    log_dir = tmp_path_factory.mktemp("logs")
    result = run_train(tiny_data, log_dir, "optimizer.lr=0.003", "model.channels=[8,16]",
                       "trainer.log_every_n_steps=5")
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(log_dir), result


@pytest.fixture(scope="session")
def real_mnist_run(tmp_path_factory) -> Path:
    """The run folder of two epochs of the default recipe on the real MNIST files, for the
    tests marked real_data (one epoch of the cosine schedule decays too soon for 98%)."""
    log_dir = tmp_path_factory.mktemp("real_logs")
    result = run_script("train.py", f"log_dir={log_dir}", "trainer=cpu", "trainer.max_epochs=2",
                        "trainer.enable_progress_bar=false", timeout_s=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(log_dir)


def tensorboard_runs(log_dir: Path):
    """TensorBoard's view of `log_dir`: its `.Runs()` are the run names the UI shows."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(log_dir))
    multiplexer.Reload()
    return multiplexer


def _event_accumulators(run_dir: Path) -> list:
    multiplexer = tensorboard_runs(run_dir)
    return [multiplexer.GetAccumulator(run) for run in multiplexer.Runs()]


def read_tensorboard(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    """The scalars (tag -> [(step, value)]) and the hparams of the event files in `run_dir`."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    hparams: dict = {}
    for accumulator in _event_accumulators(run_dir):
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
        for content in accumulator.PluginTagToContent("hparams").values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                for name, value in data.session_start_info.hparams.items():
                    hparams[name] = value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
    return scalars, hparams


def hparams_tab(log_dir: Path) -> dict[str, tuple[dict, dict]]:
    """What TensorBoard's HPARAMS tab lists for `log_dir`: run name -> (hparams, metrics)."""
    from tensorboard import context
    from tensorboard.backend.event_processing.data_provider import (
        MultiplexerDataProvider,
    )
    from tensorboard.backend.event_processing.plugin_event_multiplexer import (
        EventMultiplexer,
    )
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import (
        api_pb2,
        backend_context,
        list_session_groups,
    )

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(log_dir))
    multiplexer.Reload()
    data = base_plugin.TBContext(data_provider=MultiplexerDataProvider(multiplexer, str(log_dir)),
                                 logdir=str(log_dir))
    every_status = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(slice_size=1000, allowed_statuses=every_status)
    response = list_session_groups.Handler(context.RequestContext(), backend_context.Context(data), "",
                                           request).run()
    return {group.name: ({name: getattr(value, value.WhichOneof("kind")) for name, value in group.hparams.items()},
                         {metric.name.tag: metric.value for metric in group.metric_values})
            for group in response.session_groups}


def read_tensorboard_images(run_dir: Path) -> dict[str, list[tuple[int, int, int]]]:
    """The images of the event files in `run_dir`: tag -> [(step, width, height)]."""
    images: dict[str, list[tuple[int, int, int]]] = {}
    for accumulator in _event_accumulators(run_dir):
        for tag in accumulator.Tags()["images"]:
            images.setdefault(tag, []).extend((e.step, e.width, e.height) for e in accumulator.Images(tag))
    return images


# The figures ErrorAnalysis makes after every test, by TensorBoard tag (file: tag with "_" for "/").
TEST_FIGURES = {"test/predictions", "test/confident_mistakes", "test/confusion_matrix",
                "test/confidence_histogram", "test/reliability"}


def assert_readable_pngs(figures_dir: Path, tags: set[str]) -> None:
    """`figures_dir` holds exactly one valid PNG of a sensible size per tag."""
    assert {path.stem for path in figures_dir.glob("*.png")} == {tag.replace("/", "_") for tag in tags}
    for path in figures_dir.glob("*.png"):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 200 <= image.width <= 2000 and 200 <= image.height <= 2000, (path.name, image.size)
            image.verify()
