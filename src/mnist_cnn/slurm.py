"""What a sweep job asks SLURM for, read from the trainer it runs: resolvers of
conf/hydra/launcher/submitit_slurm.yaml."""

# A process's own thread and its data loading: what a job gets unless `threads` says more.
DEFAULT_CPUS_PER_TASK = 2


def gpus_per_node(accelerator: str, devices: int) -> int | None:
    """One GPU per device of a GPU trainer. None for a CPU trainer, or `auto`: no GPU request at
    all, which a CPU-only partition accepts (sbatch refuses a GPU request it cannot meet)."""
    return int(devices) if accelerator in ("gpu", "cuda") else None


def cpus_per_task(threads: int | None) -> int:
    """The torch threads of one process, when the run sets them."""
    return DEFAULT_CPUS_PER_TASK if threads is None else int(threads)
