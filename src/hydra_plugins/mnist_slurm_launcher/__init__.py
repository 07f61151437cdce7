"""The project's SLURM launcher for Hydra (`hydra/launcher=submitit_slurm`)."""
