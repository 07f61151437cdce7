"""Images per second of a model on the CPU: onnxruntime against torch, as export.py writes it and predict.py runs it.

    python scripts/benchmark_export.py logs/runs/<run>/checkpoints/best.ckpt

The checkpoint is exported in both formats into a temporary folder, as `python export.py`
writes them, and each is loaded as predict.py loads it (mnist_cnn.export.load_model):
- torch: the checkpoint's net in eager PyTorch, what predict.py runs for a checkpoint;
- TorchScript: the .pt file, in torch.jit;
- onnxruntime: the .onnx file, in onnxruntime's CPU provider.
Each predicts batches of random uint8 pixels (a small CNN's speed does not depend on what they
show) for `--seconds` after a few untimed batches, with torch's and onnxruntime's default
threads, in a process of its own: in a shared one, onnxruntime's threads, spinning after their
work, slowed torch's next batches by up to half. The paths alternate, round after round, so that a
burst of load from other processes hits all of them alike; a figure is the median of its
rounds, a ratio the median of the per-round ratios. Prints a Markdown table for
docs/benchmarks.md, with the machine's load average at the start and the end.
"""

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mnist_cnn.export import SUFFIXES, from_checkpoint, load_model, write
from mnist_cnn.model import IMAGE_SIZE

WARMUP_BATCHES = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a checkpoint train.py wrote")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per path, round and batch size")
    return parser.parse_args()


@torch.no_grad()
def images_per_second(model_file: Path, batch_sizes: list[int], seconds: float) -> list[float]:
    """At each batch size, the images per second of the model in `model_file`, loaded as predict.py loads it."""
    logits = load_model(model_file).logits
    figures = []
    for batch_size in batch_sizes:
        pixels = torch.randint(0, 256, (batch_size, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        for _ in range(WARMUP_BATCHES):
            logits(pixels)
        batches, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            logits(pixels)
            batches += 1
        figures.append(batches * batch_size / elapsed)
    return figures


def in_own_process(model_file: Path, batch_sizes: list[int], seconds: float) -> list[float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(images_per_second, (model_file, batch_sizes, seconds))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model = from_checkpoint(args.checkpoint)
        files = {"torch": args.checkpoint}
        for format, name in (("torchscript", "TorchScript"), ("onnx", "onnxruntime")):
            files[name] = Path(folder) / f"model{SUFFIXES[format]}"
            write(model, format, files[name])
        print(f"{args.checkpoint}: torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
              f"load average {os.getloadavg()[0]:.1f} at the start")
        rounds = [{name: in_own_process(file, args.batch_sizes, args.seconds) for name, file in files.items()}
                  for _ in range(args.rounds)]
    print("| batch size | path | images/s by round | median | vs torch |")
    print("| --- | --- | --- | --- | --- |")
    for index, batch_size in enumerate(args.batch_sizes):
        for name in files:
            figures = [round_[name][index] for round_ in rounds]
            ratio = statistics.median(round_[name][index] / round_["torch"][index] for round_ in rounds)
            print(f"| {batch_size} | {name} | {', '.join(f'{figure:,.0f}' for figure in figures)} | "
                  f"{statistics.median(figures):,.0f} | {ratio:.2f}x |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
