"""Every option of every config group composes into a config that builds its object."""

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_cnn.config import CONFIG_DIR, job_label, register_resolvers

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def hydra_config_dir():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = compose("train", overrides=[f"{group}={option}"])
    node = cfg[group]
    assert OmegaConf.select(cfg, "seed") == 42
    if group == "scheduler" and option == "none":
        assert not node
    elif group == "callbacks":
        assert all("_target_" in callback for callback in node.values())
    else:
        assert "_target_" in node


def test_overrides_users_type_reach_their_keys():
    cfg = compose("train", overrides=["optimizer.lr=0.01", "optimizer.weight_decay=0.1", "data.batch_size=64",
                                      "model.channels=[16,32,64]", "model.dropout=0.25",
                                      "trainer.max_epochs=3", "seed=7"])
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.weight_decay == 0.1
    assert cfg.data.batch_size == 64 and cfg.data.seed == 7
    assert list(cfg.model.channels) == [16, 32, 64] and cfg.model.dropout == 0.25
    assert cfg.trainer.max_epochs == 3


def test_data_dir_is_absolute_wherever_the_run_starts():
    cfg = compose("train")
    assert cfg.data.data_dir == str(CONFIG_DIR.parent / "data")


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_composes(preset):
    cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert "_target_" in cfg.model and "_target_" in cfg.optimizer


def test_sweep_preset_is_a_multirun_over_its_params():
    cfg = compose("train", overrides=["experiment=lr_batch_channels_grid"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "data.batch_size", "model.channels"}


def test_optuna_search_maximises_over_lr_batch_size_channels_and_dropout(tmp_path):
    pytest.importorskip("optuna", reason="needs pip install -e '.[sweep]'")
    cfg = compose("train", overrides=["hparams_search=optuna", f"log_dir={tmp_path}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.mnist_optuna_sweeper.sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and sweeper.objective == "val/acc_best"
    # the study is kept in its sweep folder, one per study name, so a rerun continues it
    assert sweeper.study_name == "mnist-cnn"
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna/mnist-cnn/study.db"
    assert not (tmp_path / "optuna").exists()  # made by the sweeper when a search starts, not by composing
    assert set(sweeper.params) == {"optimizer.lr", "data.batch_size", "model.channels", "model.dropout"}
    assert sweeper.params["optimizer.lr"].startswith("tag(log,")
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert cfg.callbacks.prune_trial.trial_number is None  # a plain run with the preset prunes nothing


@pytest.mark.parametrize("pruner, target", [("median", "MedianPruner"), ("hyperband", "HyperbandPruner"),
                                            ("none", "NopPruner")])
def test_every_pruner_option_builds_its_optuna_pruner(pruner, target):
    optuna = pytest.importorskip("optuna", reason="needs pip install -e '.[sweep]'")
    cfg = compose("train", overrides=["hparams_search=optuna", f"hydra/sweeper/pruner={pruner}"],
                  return_hydra_config=True)
    assert isinstance(instantiate(cfg.hydra.sweeper.pruner), getattr(optuna.pruners, target))


LAUNCHERS = ["basic", "joblib", *(path.stem for path in sorted((CONFIG_DIR / "hydra" / "launcher").glob("*.yaml")))]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_optuna_sweeper_composes_with_every_launcher(launcher, tmp_path):
    pytest.importorskip("optuna", reason="needs pip install -e '.[sweep]'")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs pip install -e '.[cluster]'")
    multi_node = ["trainer=ddp"] if launcher == "submitit_slurm" else []  # its sizes follow a DDP trainer's
    cfg = compose("train", overrides=["hparams_search=optuna", f"hydra/launcher={launcher}", f"log_dir={tmp_path}",
                                      *multi_node], return_hydra_config=True)
    sweeper = Plugins.instance().instantiate_sweeper(  # as Hydra does at the start of a multirun
        config=cfg, hydra_context=HydraContext(config_loader=None, callbacks=Callbacks(cfg)),
        task_function=lambda job_config: None)
    assert type(sweeper).__name__ == "OptunaSweeper" and sweeper.search.n_trials == 20
    assert type(sweeper.search.launcher).__name__ == {"basic": "BasicLauncher", "joblib": "JoblibLauncher",
                                               "submitit_local": "LocalLauncher",
                                               "submitit_slurm": "SlurmLauncher"}[launcher]
    assert cfg.hydra.sweep.dir == f"{tmp_path}/optuna/mnist-cnn"  # every launcher's jobs land in the study's folder


def test_sweep_jobs_are_named_by_their_overrides_without_paths():
    overrides = ["optimizer.lr=1e-4", "data.batch_size=64", "model.channels=[16,32]",
                 "log_dir=/tmp/logs", "data.data_dir=data", "ckpt_path=runs/a/best.ckpt"]
    assert job_label(RunMode.MULTIRUN, overrides) == "batch_size=64,channels=[16,32],lr=0.0001"
    assert job_label(RunMode.RUN, overrides) == ""  # a single run's events stay in its folder
