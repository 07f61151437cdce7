"""The project's Optuna sweeper for Hydra (`override /hydra/sweeper: mnist_optuna`)."""
