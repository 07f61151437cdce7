"""What exact resume adds to every training step, against the step itself, measured in one run.

    python scripts/benchmark_step_overheads.py              # batch 128, the default net, 200 steps
    python scripts/benchmark_step_overheads.py --batch-size 32

Three timings on this machine's CPU, each the median of five rounds:
- a training step of the default net (forward, cross-entropy, backward, Adam), the reference;
- `randomness.seed_generators`, which every training step calls first;
- the agreement on a stop under DDP (`CheckpointOnInterrupt`): one boolean all-reduce, between
  two gloo processes on this machine, as Lightning's `reduce_boolean_decision` does it.
Prints one markdown table with each cost as a share of the step.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mnist_cnn.config import record_project_root, register_resolvers
from mnist_cnn.randomness import seed_generators

ROUNDS = 5
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def median_seconds(work, calls: int) -> float:
    """The median over ROUNDS of the mean time of one call of `work`."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        rounds.append((time.perf_counter() - started) / calls)
    return statistics.median(rounds)


def training_step_seconds(batch_size: int, steps: int) -> float:
    record_project_root(CONFIG_DIR)
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        net = instantiate(compose(config_name="train").model)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images, labels = torch.randn(batch_size, 1, 28, 28), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()

    step()  # the first step allocates
    return median_seconds(step, steps)


def all_reduce_rank(rank: int, calls: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    decision = torch.tensor(0)

    def agree() -> None:
        dist.all_reduce(decision, op=dist.ReduceOp.SUM)

    agree()
    seconds = median_seconds(agree, calls)
    if rank == 0:
        results.put(seconds)
    dist.destroy_process_group()


def stop_agreement_seconds(calls: int) -> float:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = 29500 + os.getpid() % 1000
    processes = [context.Process(target=all_reduce_rank, args=(rank, calls, port, results)) for rank in (0, 1)]
    for process in processes:
        process.start()
    seconds = results.get(timeout=300)
    for process in processes:
        process.join()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    arguments = parser.parse_args()

    step = training_step_seconds(arguments.batch_size, arguments.steps)
    seeding = median_seconds(lambda: seed_generators(42, 1000, 0), 2000)
    agreement = stop_agreement_seconds(2000)
    step = f"per training step (batch {arguments.batch_size}, {torch.get_num_threads()} threads)"
    print(f"| {step} | time | share of the step |")
    print("| --- | --- | --- |")
    print(f"| the step itself | {step * 1e3:.1f} ms | 100% |")
    print(f"| seeding the generators | {seeding * 1e6:.0f} µs | {seeding / step:.2%} |")
    print(f"| agreeing on a stop, 2 DDP ranks (gloo) | {agreement * 1e6:.0f} µs | {agreement / step:.2%} |")


if __name__ == "__main__":
    main()
