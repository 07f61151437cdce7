"""Where the project's configs live, and the resolvers they use."""

from collections.abc import Sequence
from pathlib import Path

from hydra.types import RunMode
from omegaconf import OmegaConf

from mnist_cnn.overrides import overrides_label

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"


def job_label(mode: RunMode, overrides: Sequence[str]) -> str:
    """A sweep job's TensorBoard run name, from its overrides; empty for a single run,
    whose events stay in the run folder itself (one TensorBoard run per run folder)."""
    return overrides_label(overrides) if mode == RunMode.MULTIRUN else ""


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("job_label", job_label, replace=True)
