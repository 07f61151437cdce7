"""How fast the project trains, against a plain PyTorch loop, and how soon it reaches 99%.

    python scripts/benchmark.py                                  # the full benchmark, a few minutes
    python scripts/benchmark.py --variant bf16=trainer.precision=bf16-mixed --skip-runs
    python scripts/benchmark.py --startup-only                   # only (f), a few seconds

(a) A plain loop as a tutorial writes it (the net in the textbook order conv, ReLU, pool,
default memory format; Adam, nothing else), (b) the same loop over the project's own net
(the same function and weights, run with the project's speed switches), and (c) the
project's path (the Trainer, logger, callbacks and metrics that `python train.py` builds
from the composed config) train on the same batches in this one process, in alternating
rounds, so that load from other processes slows all alike; (c) against (b) is what
Lightning, logging and metrics cost. Each `--variant` is the project's path with more
overrides. Then (d) `python train.py experiment=fast` runs as a user types it, timed from
process start to exit, and (e) a one-epoch default run gives the default's peak memory
(data and model are loaded once, so memory does not grow with epochs). (f) Before all that,
the commands that train nothing (`python train.py --help`, `--cfg job`, a tab completion) run
as a user types them, timed from start to exit against `python -c "import hydra"`, the least
any Hydra app takes.
Trailing arguments are Hydra overrides applied to every part, e.g. data.batch_size=256.
"""

import argparse
import copy
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from mnist_cnn.allocator import reuse_freed_memory
from mnist_cnn.config import register_resolvers
from mnist_cnn.data import IndexBatches, MNISTDataModule, TensorBatches, normalize
from mnist_cnn.train import build

# The checkout this script belongs to: its conf/, and its logs/ for the report.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "conf"

PLAIN = "plain loop"
BARE = "project's net, plain loop"
PROJECT = "project"

# The commands that train nothing: name -> (python's arguments, environment), as a user runs them.
IMPORT_HYDRA = 'python -c "import hydra"'
TAB_LINE = "python train.py data="  # on TAB, bash's completion function (`-sc install=bash`) asks the app
STARTUP_COMMANDS = {
    IMPORT_HYDRA: (["-c", "import hydra"], {}),
    "python train.py --help": (["train.py", "--help"], {}),
    "python train.py --cfg job": (["train.py", "--cfg", "job"], {}),
    f"TAB after {TAB_LINE}": (["train.py", "-sc", "query=bash"],
                              {"COMP_LINE": TAB_LINE, "COMP_POINT": str(len(TAB_LINE))}),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per round and path")
    parser.add_argument("--warmup-steps", type=int, default=20, help="untimed steps before each timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the table shows medians")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDE[ OVERRIDE...]",
                        help="also time the project's path with these overrides (repeatable)")
    parser.add_argument("--skip-runs", action="store_true",
                        help="skip the train.py runs (time to accuracy, peak memory)")
    parser.add_argument("--startup-only", action="store_true",
                        help="time only the commands that train nothing (--help, --cfg job, tab completion)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "logs" / "benchmark.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every part")
    return parser.parse_args()


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would run with, its outputs under `output_dir`."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.output_dir} in logger and callbacks
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)  # now, while HydraConfig holds this config's output folder
    return cfg


def shuffled_batches(split: TensorBatches, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches the project's sampler deals, epoch after epoch, normalised."""
    sampler = IndexBatches(len(split), batch_size, shuffle=True, seed=seed)
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        for indices in sampler:
            images, labels = split[indices]
            yield normalize(images), labels


def textbook_net(project_net: nn.Module, model: DictConfig) -> nn.Module:
    """The project's net as a tutorial writes it: conv, ReLU, pool per block, default memory
    format. It takes the project's weights, which also proves the two are the same net.
    With batch norm, which the project applies after the pooling, the blocks keep the
    project's order (conv, pool, batch norm, ReLU): the textbook's computes another function."""
    kernel_size, batch_norm = model.kernel_size, model.batch_norm
    layers, in_channels = [], 1
    for width in model.channels:
        for _ in range(model.convs_per_block - 1):  # VGG-style: conv, batch norm, ReLU
            layers += [nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=not batch_norm),
                       *([nn.BatchNorm2d(width)] if batch_norm else []), nn.ReLU()]
            in_channels = width
        layers += [nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=not batch_norm),
                   *([nn.MaxPool2d(2), nn.BatchNorm2d(width), nn.ReLU()] if batch_norm
                     else [nn.ReLU(), nn.MaxPool2d(2)])]
        in_channels = width
    size = 28 // 2 ** len(model.channels)
    if model.global_pool:
        layers.append(nn.AdaptiveAvgPool2d(1))
        size = 1
    dropout = [nn.Dropout(model.dropout)] if model.dropout else []
    if model.hidden_units is None:
        head = [*dropout, nn.Linear(in_channels * size * size, model.num_classes)]
    else:
        head = [nn.Linear(in_channels * size * size, model.hidden_units), nn.ReLU(), *dropout,
                nn.Linear(model.hidden_units, model.num_classes)]
    net = nn.Sequential(*layers, nn.Flatten(), *head)
    # strict: any difference in parameters or their shapes raises
    net.load_state_dict(dict(zip(net.state_dict(), project_net.state_dict().values(), strict=True)))
    return net


def plain_loop_images_per_s(net: nn.Module, cfg: DictConfig, warmup_steps: int, steps: int) -> float:
    datamodule: MNISTDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    batches = shuffled_batches(datamodule.splits["train"], cfg.data.batch_size, cfg.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr)
    images_seen = 0
    for step in range(warmup_steps + steps):
        if step == warmup_steps:
            started = time.perf_counter()
        images, labels = next(batches)
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images_seen += len(labels) if step >= warmup_steps else 0
    return images_seen / (time.perf_counter() - started)


class StepTimer(L.Callback):
    """Times the training steps after the warm-up: from the start of the first to the end of the last."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps, self.images, self.started, self.elapsed_s = warmup_steps, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup_steps:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step > self.warmup_steps:
            self.images += len(batch[1])
            self.elapsed_s = time.perf_counter() - self.started


def project_images_per_s(cfg: DictConfig, warmup_steps: int, steps: int) -> float:
    cfg = copy.deepcopy(cfg)
    # Training steps only: validation and the sanity check are measured in time to accuracy.
    for key, value in {"trainer.max_steps": warmup_steps + steps, "trainer.max_epochs": -1,
                       "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0}.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    timer = StepTimer(warmup_steps)
    datamodule, classifier, trainer = build(cfg, extra_callbacks=[timer])
    trainer.fit(classifier, datamodule=datamodule)
    return timer.images / timer.elapsed_s


def timed_run(overrides: list[str], log_dir: Path) -> dict:
    """`python train.py <overrides>` as a user types it: wall time from start to exit, peak memory, metrics."""
    command = [sys.executable, "train.py", f"log_dir={log_dir}", "trainer.enable_progress_bar=false", *overrides]
    log_dir.mkdir(parents=True)
    output_file = log_dir / "output.txt"
    started = time.perf_counter()
    with output_file.open("w") as output:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage
    wall_time_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output_file.read_text()[-3000:]}")
    (run_dir,) = (log_dir / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"command": "python train.py " + " ".join(overrides), "wall_time_s": round(wall_time_s, 1),
            "peak_memory_mb": round(usage.ru_maxrss / 1024), "test_acc": metrics["test/acc"],
            "epochs": metrics["epochs"]}


def startup_times(rounds: int) -> dict:
    """Each of STARTUP_COMMANDS from process start to exit, alternating round after round; the
    ratio to `import hydra` is the median of the per-round ratios."""
    seconds: dict[str, list[float]] = {name: [] for name in STARTUP_COMMANDS}
    for round_number in range(rounds + 1):  # round 0 warms the file cache and is not counted
        for name, (arguments, env) in STARTUP_COMMANDS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, *arguments], cwd=PROJECT_ROOT, env={**os.environ, **env}, check=True,
                           stdout=subprocess.DEVNULL)
            if round_number:
                seconds[name].append(time.perf_counter() - started)
    return {name: {"seconds_by_round": [round(value, 3) for value in values],
                   "median_s": round(statistics.median(values), 3),
                   "vs_import_hydra": round(statistics.median(
                       value / base for value, base in zip(values, seconds[IMPORT_HYDRA])), 2)}
            for name, values in seconds.items()}


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 "unknown")
    return {"cpu": model, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
            "lightning": L.__version__, "cuda": torch.cuda.is_available(),
            "load_average_1min_start": os.getloadavg()[0]}


def print_table(result: dict) -> None:
    print(f"\nmachine: {result['machine']['cpu']}, {result['machine']['cpus']} CPUs, "
          f"{result['machine']['torch_threads']} torch threads, load {result['machine']['load_average_1min_start']:.1f}"
          f" -> {result['machine']['load_average_1min_end']:.1f}")
    print(f"start to exit, median of {result['rounds']} rounds:")
    for name, row in result["startup"].items():
        print(f"  {name:<34} {row['median_s']:>6.2f} s {row['vs_import_hydra']:>6.2f}x import hydra")
    if result["startup_only"]:
        return
    print(f"training throughput, batch size {result['batch_size']}, median of {result['rounds']} rounds:")
    print(f"  {'path':<28} {'images/s':>9} {'vs plain loop':>14}")
    for name, row in result["throughput"].items():
        print(f"  {name:<28} {row['images_per_s']:>9.0f} {row['vs_plain_loop']:>13.2f}x")
    print(f"the Trainer, logging and metrics cost {result['lightning_overhead']:.1%} of a step "
          f"({PROJECT} against {BARE})")
    for name, run in result["runs"].items():
        print(f"{name}: {run['command']}\n  test accuracy {run['test_acc']:.2%} after {run['epochs']} epochs, "
              f"{run['wall_time_s']} s from start to exit, peak memory {run['peak_memory_mb']} MB")


def main() -> None:
    args = parse_args()
    register_resolvers()
    machine_at_start = machine()
    startup = startup_times(args.rounds)
    if args.startup_only:
        write_and_print(args.json, {"machine": {**machine_at_start, "load_average_1min_end": os.getloadavg()[0]},
                                    "rounds": args.rounds, "startup": startup, "startup_only": True})
        return
    variants = {PROJECT: []}
    for variant in args.variant:
        name, _, overrides = variant.partition("=")
        variants[name] = overrides.split()

    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        configs = {name: compose_config([*args.overrides, *extra], Path(scratch) / "runs" / name)
                   for name, extra in variants.items()}
        if configs[PROJECT].reuse_freed_memory:
            # Process-wide and for good, so every path here runs with it: the ratios leave out its gain.
            reuse_freed_memory()
        timings: dict[str, list[float]] = {PLAIN: [], BARE: [], **{name: [] for name in variants}}
        project_model = configs[PROJECT].model
        for round_number in range(1, args.rounds + 1):  # alternate: a burst of load hits every path alike
            project_net = instantiate(project_model)
            plain_net = textbook_net(project_net, project_model)
            timings[PLAIN].append(plain_loop_images_per_s(plain_net, configs[PROJECT], args.warmup_steps, args.steps))
            timings[BARE].append(plain_loop_images_per_s(project_net, configs[PROJECT], args.warmup_steps, args.steps))
            for name, cfg in configs.items():
                timings[name].append(project_images_per_s(cfg, args.warmup_steps, args.steps))
            print(f"round {round_number}: " + ", ".join(f"{name} {values[-1]:.0f}" for name, values in timings.items())
                  + f" images/s; load {os.getloadavg()[0]:.1f}", flush=True)

        runs = {} if args.skip_runs else {
            "time to accuracy": timed_run(["experiment=fast", *args.overrides], Path(scratch) / "fast"),
            "default run memory": timed_run(["trainer.max_epochs=1", *args.overrides], Path(scratch) / "default"),
        }

    result = {
        "machine": {**machine_at_start, "load_average_1min_end": os.getloadavg()[0]},
        "batch_size": configs[PROJECT].data.batch_size, "rounds": args.rounds, "steps": args.steps,
        "overrides": args.overrides,
        "throughput": {
            name: {"overrides": variants.get(name, []), "images_per_s_by_round": [round(v) for v in values],
                   "images_per_s": statistics.median(values),
                   # per-round ratios: the paths of one round ran under the same load
                   "vs_plain_loop": statistics.median(v / p for v, p in zip(values, timings[PLAIN]))}
            for name, values in timings.items()
        },
        # what the Trainer, logging and metrics cost: the project's path against a plain loop over its net
        "lightning_overhead": 1 - statistics.median(p / b for p, b in zip(timings[PROJECT], timings[BARE])),
        "runs": runs,
        "startup": startup, "startup_only": False,
    }
    write_and_print(args.json, result)


def write_and_print(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
