"""Every option of every config group, and every preset, builds the objects train.py uses."""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from mnist_cnn.classifier import RUN_LENGTH_ARGUMENT
from mnist_cnn.config import CONFIG_DIR, job_label, register_resolvers
from mnist_cnn.train import build

GROUPS = ["data", "model", "optimizer", "scheduler", "trainer", "logger", "callbacks"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def hydra_config_dir():
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield
    HydraConfig.instance().cfg = None  # `built` set it; no other test may see a Hydra job


def built(tmp_path: Path, *overrides: str):
    """The datamodule, classifier, trainer, optimizer and scheduler that train.py builds from
    `python train.py <overrides>`, with the run folder at `tmp_path`."""
    cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)  # what Hydra sets when it starts a job
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    datamodule, classifier, trainer = build(cfg)
    optimizer = instantiate(cfg.optimizer, params=classifier.parameters())
    scheduler_config = OmegaConf.to_container(cfg.scheduler, resolve=True)
    scheduler = None
    if scheduler_config:
        run_length = RUN_LENGTH_ARGUMENT.get(scheduler_config["_target_"])
        scheduler = instantiate({**scheduler_config, **({run_length: 100} if run_length else {})},
                                optimizer=optimizer)
    return cfg, datamodule, classifier, trainer, optimizer, scheduler


def class_path(target: str) -> str:
    return target.rsplit(".", 1)[-1]


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_builds_its_objects(group, option, tmp_path):
    if group == "trainer" and option == "gpu" and not torch.cuda.is_available():
        pytest.skip("trainer=gpu needs a CUDA GPU")
    cfg, datamodule, classifier, trainer, optimizer, scheduler = built(tmp_path, f"{group}={option}")

    assert type(datamodule).__name__ == class_path(cfg.data._target_)
    assert type(classifier.net).__name__ == class_path(cfg.model._target_)
    assert type(optimizer).__name__ == class_path(cfg.optimizer._target_)
    assert type(scheduler).__name__ == class_path(cfg.scheduler._target_) if cfg.scheduler else scheduler is None
    assert type(trainer.logger).__name__ == class_path(cfg.logger._target_)
    assert {class_path(callback._target_) for callback in cfg.callbacks.values()} <= \
        {type(callback).__name__ for callback in trainer.callbacks}
    if "strategy" in cfg.trainer:
        assert type(trainer.strategy).__name__ == class_path(cfg.trainer.strategy._target_)
    assert trainer.max_epochs == cfg.trainer.max_epochs and trainer.world_size == trainer.num_devices == \
        cfg.trainer.devices * cfg.trainer.get("num_nodes", 1)


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
def test_every_experiment_preset_builds_its_objects(preset, tmp_path):
    cfg, _, classifier, trainer, optimizer, _ = built(tmp_path, f"experiment={preset}")
    assert optimizer.defaults["lr"] == cfg.optimizer.lr  # param_groups hold the schedule's first lr
    assert list(classifier.hparams.model["channels"]) == list(cfg.model.channels)
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_optuna_study_lives_in_a_folder_of_its_own_under_log_dir(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[sweep]'")
    cfg = compose("train", overrides=["hparams_search=optuna", f"log_dir={tmp_path}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    # the study is kept in the sweep folder, one per study name, so a rerun continues it
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna/{sweeper.study_name}/study.db"
    assert (tmp_path / "optuna" / sweeper.study_name).is_dir()  # made for SQLite, which makes no folders


def test_sweep_jobs_are_named_by_their_overrides_without_paths():
    overrides = ["optimizer.lr=1e-4", "data.batch_size=64", "model.channels=[16,32]",
                 "log_dir=/tmp/logs", "data.data_dir=data", "ckpt_path=runs/a/best.ckpt"]
    assert job_label(RunMode.MULTIRUN, overrides) == "batch_size=64,channels=[16,32],lr=0.0001"
    assert job_label(RunMode.RUN, overrides) == ""  # a single run's events stay in its folder


def test_trainer_debug_is_debug_limit_under_its_older_name():
    assert compose("train", overrides=["trainer=debug"]).trainer == \
        compose("train", overrides=["debug=limit"]).trainer != compose("train").trainer
