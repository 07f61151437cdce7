"""Every option of every config group, and every preset, builds the objects train.py uses."""

import inspect
from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import HydraContext, RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from mnist_cnn.config import register_resolvers
from mnist_cnn.data import MNISTDataModule
from mnist_cnn.experiment_trackers import tracker_configs
from mnist_cnn.model import CNN
from mnist_cnn.overrides import keys_swept_by, overrides_label
from mnist_cnn.schema import RUN_LENGTH_ARGUMENT
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
    assert [type(logger).__name__ for logger in trainer.loggers] == \
        [class_path(tracker._target_) for tracker in tracker_configs(cfg.logger)]
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


def test_logs_and_data_belong_to_the_checkout_whose_configs_compose_the_run():
    cfg = compose("train")
    assert cfg.data.data_dir == str(CONFIG_DIR.parent / "data")
    assert cfg.log_dir == str(CONFIG_DIR.parent / "logs")


@pytest.mark.parametrize("cls, group", [(CNN, "model"), (MNISTDataModule, "data")])
def test_python_defaults_are_the_yaml_values(cls, group):
    settings = OmegaConf.to_container(compose("train")[group], resolve=True)
    defaults = {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    assert defaults and set(defaults) <= set(settings)  # the YAML sets every argument that has a default
    for name, default in defaults.items():
        expected = settings[name]
        assert (list(default) if isinstance(default, tuple) else default) == expected, name


def test_entry_configs_write_no_setting_twice():
    train, evaluation = (OmegaConf.load(CONFIG_DIR / f"{name}.yaml") for name in ("train", "eval"))
    def written(config, key):
        return OmegaConf.to_yaml({key: config._get_node(key)})

    repeated = {key for key in set(train) & set(evaluation) - {"defaults", "hydra"}
                if written(train, key) == written(evaluation, key)}
    assert not repeated  # settings both share live once, in conf/shared.yaml

    composed = compose("eval", overrides=["ckpt_path=a.ckpt"])
    assert composed.seed == compose("train").seed and "log_dir" in composed


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_builds_its_objects(preset, tmp_path):
    cfg, _, classifier, trainer, optimizer, _ = built(tmp_path, f"experiment={preset}")
    assert optimizer.defaults["lr"] == cfg.optimizer.lr  # param_groups hold the schedule's first lr
    assert list(classifier.hparams.model["channels"]) == list(cfg.model.channels)
    assert trainer.max_epochs == cfg.trainer.max_epochs


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


@pytest.mark.parametrize("pruner, target", [("median", "MedianPruner"), ("percentile", "PercentilePruner"),
                                            ("hyperband", "HyperbandPruner"), ("none", "NopPruner")])
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


def test_sweep_jobs_are_named_by_the_values_the_sweep_varies_without_paths():
    command_line = ["optimizer.lr=1e-4,1e-3", "model.channels=[16,32],[32,64]", "optimizer=adam,sgd",
                    "data.batch_size=64", "log_dir=/tmp/logs", "data.data_dir=a,b"]
    sweeper_params = {"model.dropout": "interval(0.0, 0.5)", "data.batch_size": "choice(32, 64)",
                      "trainer.max_epochs": 3}
    job = ["optimizer.lr=1e-4", "model.channels=[16,32]", "optimizer=adam", "data.batch_size=64",
           "log_dir=/tmp/logs", "data.data_dir=a", "model.dropout=0.25", "trainer.max_epochs=3"]

    swept = keys_swept_by(command_line, sweeper_params)

    # a single value on the command line fixes a key the sweeper's params would vary
    assert swept == {"optimizer.lr", "model.channels", "optimizer", "data.data_dir", "model.dropout"}
    assert overrides_label(job, swept) == "channels=[16,32],dropout=0.25,lr=0.0001,optimizer=adam"


def test_trainer_debug_is_debug_limit_under_its_older_name():
    assert compose("train", overrides=["trainer=debug"]).trainer == \
        compose("train", overrides=["debug=limit"]).trainer != compose("train").trainer
