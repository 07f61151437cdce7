"""Checks for a machine with one NVIDIA GPU, one line each, in a few minutes:

    python scripts/gpu_check.py                     # the four checks
    python scripts/gpu_check.py --seeds 3 --experiment best  # also: experiment=best with seeds 1..3, test accuracies
    python scripts/gpu_check.py --dry-run           # the same code on the CPU, tiny settings (what the tests run)

1. `trainer=gpu experiment=fast`: seconds from process start to exit, and whether it reached 99%.
2. One epoch of `experiment=best`: training images/s (the epoch's images over the run's wall time,
   which includes validation and test).
3. The data lives on the GPU: the training split's device, and the sizes of the host-to-device
   copies the CUDA profiler sees over some training steps (index tensors and scalars are a few
   bytes; a batch of images served from the host would be a copy of the batch's size).
4. bf16-mixed against 32-true on `experiment=fast`: the test accuracies and their difference.

Trailing arguments after `--` go to every run as Hydra overrides (the tests point the runs at
tiny data that way).

Bringing Hydra along: such a machine may have torch, lightning, torchvision, torchmetrics,
tensorboard and matplotlib, but not hydra-core, omegaconf or antlr4, and no network. On a
machine with network, in this project's folder:

    pip wheel --no-deps -w wheels hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3

(all three are pure Python; pip wheel builds antlr4's wheel from its source archive; PyYAML,
their one other dependency, comes with Lightning), copy the project with
wheels/ to the GPU machine, and there, without installing the project itself:

    pip install --no-index --no-deps wheels/*.whl
    PYTHONPATH=src python scripts/gpu_check.py     # the train.py runs inherit PYTHONPATH
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from hydra import compose, initialize_config_dir
except ImportError:
    sys.exit("hydra-core is not installed here: see `Bringing Hydra along` in scripts/gpu_check.py")

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_cnn.classifier import Classifier
from mnist_cnn.config import register_resolvers
from mnist_cnn.train import plain

# The checkout this script belongs to: its train.py and conf/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"

# Dry run: the same commands on the CPU, each cut to a few batches.
DRY_RUN_OVERRIDES = ["trainer=cpu", "trainer.max_epochs=1", "++trainer.limit_train_batches=3",
                     "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2"]
PROFILED_STEPS = 20
DRY_RUN_PROFILED_STEPS = 3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU with a few batches per run")
    parser.add_argument("--seeds", type=int, default=0, metavar="N",
                        help="also train the preset given by --experiment with seeds 1..N")
    parser.add_argument("--experiment", default="best", help="the preset for --seeds (default: best)")
    parser.add_argument("--skip-checks", action="store_true", help="only the --seeds runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    return parser.parse_args()


def train(log_dir: Path, overrides: list[str]) -> tuple[dict, float]:
    """`python train.py <overrides>` as a user types it: its metrics.json (with the run's batch size)
    and its seconds from start to exit."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "train.py"), f"log_dir={log_dir}",
                             "trainer.enable_progress_bar=false", *overrides],
                            capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(overrides)} failed:\n{result.stderr[-3000:]}")
    [run_dir] = [path for path in (log_dir / "runs").iterdir() if path.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["batch_size"] = OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.batch_size
    return metrics, seconds


def run_in(scratch: Path, name: str, overrides: list[str]) -> tuple[dict, float]:
    log_dir = scratch / name
    log_dir.mkdir()
    return train(log_dir, overrides)


def check_fast(scratch: Path, hardware: list[str], extra: list[str]) -> str:
    metrics, seconds = run_in(scratch, "fast", ["experiment=fast", *hardware, *extra])
    reached = "reached" if metrics["test/acc"] >= 0.99 else "did NOT reach"
    return (f"experiment=fast: {seconds:.1f} s from process start to exit, "
            f"test accuracy {metrics['test/acc']:.2%} ({reached} 99%)")


def check_best_epoch(scratch: Path, hardware: list[str], extra: list[str]) -> str:
    metrics, seconds = run_in(scratch, "best_epoch", ["experiment=best", "trainer.max_epochs=1", *hardware, *extra])
    images = metrics["steps"] * metrics["batch_size"]
    return (f"experiment=best, one epoch: {images / metrics['wall_time_s']:,.0f} training images/s "
            f"({metrics['steps']} steps in {metrics['wall_time_s']} s with validation and test; "
            f"process {seconds:.1f} s)")


def host_to_device_copies(trace: Path) -> list[int]:
    """The bytes of every host-to-device copy in a profiler trace (Kineto's chrome-trace JSON)."""
    events = json.loads(trace.read_text()).get("traceEvents", [])
    return [event.get("args", {}).get("bytes", 0) for event in events
            if event.get("cat") == "gpu_memcpy" and "HtoD" in event.get("name", "")]


def check_resident_data(hardware: list[str], extra: list[str], steps: int, scratch: Path) -> str:
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=best", *hardware, *extra])
    datamodule = instantiate(cfg.data)
    classifier = Classifier(plain(cfg.model), plain(cfg.optimizer), None, class_names=list(datamodule.class_names),
                            preprocessing=datamodule.preprocessing)
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.trainer.precision,
                        max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        trainer.fit(classifier, datamodule=datamodule)
    trace = scratch / "resident_data_trace.json"
    profile.export_chrome_trace(str(trace))
    copies = host_to_device_copies(trace)
    # Index tensors and scalars still cross (a few bytes each); a batch of images would not fit
    # under this size, so a copy this large means the data is served from the host.
    batch_bytes = cfg.data.batch_size * 28 * 28
    largest = max(copies, default=0)
    verdict = "no batch crosses from the host" if largest < batch_bytes else "BATCHES CROSS FROM THE HOST"
    profiled = "CUDA profiler" if torch.cuda.is_available() else "no CUDA here: copies not profiled"
    return (f"data resident: training split on {datamodule.splits['train'].images.device}, "
            f"{len(copies)} host-to-device copies in {trainer.global_step} steps, {sum(copies):,} bytes, "
            f"the largest {largest:,} bytes against {batch_bytes:,} for a batch of images ({profiled}): {verdict}")


def check_bf16(scratch: Path, hardware: list[str], extra: list[str]) -> str:
    accuracy = {}
    for precision in ("32-true", "bf16-mixed"):
        metrics, _ = run_in(scratch, f"fast_{precision}", ["experiment=fast", *hardware,
                                                           f"trainer.precision={precision}", *extra])
        accuracy[precision] = metrics["test/acc"]
    difference = accuracy["bf16-mixed"] - accuracy["32-true"]
    verdict = "within noise" if abs(difference) <= 0.003 else "OUTSIDE the 0.3-point noise of experiment=fast"
    return (f"bf16-mixed {accuracy['bf16-mixed']:.2%} against 32-true {accuracy['32-true']:.2%} "
            f"on experiment=fast: {difference:+.2%}, {verdict}")


def seeds_of(scratch: Path, experiment: str, seeds: int, hardware: list[str], extra: list[str]) -> str:
    accuracies, times = [], []
    for seed in range(1, seeds + 1):
        metrics, seconds = run_in(scratch, f"{experiment}_{seed}", [f"experiment={experiment}", f"seed={seed}",
                                                                    *hardware, *extra])
        accuracies.append(metrics["test/acc"])
        times.append(seconds)
        print(f"experiment={experiment} seed={seed}: test accuracy {metrics['test/acc']:.2%}, "
              f"{metrics['epochs']} epochs, {seconds:.0f} s", flush=True)
    mean = sum(accuracies) / len(accuracies)
    return f"experiment={experiment}, {seeds} seeds: mean test accuracy {mean:.2%} (" + \
        ", ".join(f"{a:.2%}" for a in accuracies) + f"), {max(times):.0f} s the longest run"


def main() -> None:
    args = parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --dry-run to try the checks on the CPU")
    hardware = DRY_RUN_OVERRIDES if args.dry_run else ["trainer=gpu"]
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run else 'cpu'}, "
          f"torch {torch.__version__}, lightning {L.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as folder:
        scratch = Path(folder)
        checks = [] if args.skip_checks else [
            lambda: check_fast(scratch, hardware, args.overrides),
            lambda: check_best_epoch(scratch, hardware, args.overrides),
            lambda: check_resident_data(["trainer=cpu"] if args.dry_run else hardware, args.overrides,
                                        DRY_RUN_PROFILED_STEPS if args.dry_run else PROFILED_STEPS, scratch),
            lambda: check_bf16(scratch, hardware, args.overrides),
        ]
        if args.seeds:
            checks.append(lambda: seeds_of(scratch, args.experiment, args.seeds, hardware, args.overrides))
        for check in checks:
            started = time.perf_counter()
            print(f"{check()}  [{time.perf_counter() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
