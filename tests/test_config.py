"""Every option of every config group composes into a config that builds its object."""

import inspect

import pytest
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from mnist_cnn.config import register_resolvers
from mnist_cnn.data import MNISTDataModule
from mnist_cnn.model import CNN
from mnist_cnn.overrides import keys_swept_by, overrides_label

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


def test_logs_and_data_belong_to_the_checkout_whose_configs_compose_the_run():
    cfg = compose("train", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # as Hydra does before a run resolves its config
    assert cfg.data.data_dir == str(CONFIG_DIR.parent / "data")
    assert cfg.log_dir == str(CONFIG_DIR.parent / "logs")


@pytest.mark.parametrize("cls, config", [(CNN, "model/cnn.yaml"), (MNISTDataModule, "data/mnist.yaml")])
def test_python_defaults_are_the_yaml_values(cls, config):
    settings = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / config))
    defaults = {name: parameter.default for name, parameter in inspect.signature(cls).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    assert defaults and set(defaults) <= set(settings)  # the YAML sets every argument that has a default
    for name, default in defaults.items():
        expected = settings[name]
        assert (list(default) if isinstance(default, tuple) else default) == expected, name


def test_entry_configs_write_no_setting_twice():
    train, evaluation = (OmegaConf.load(CONFIG_DIR / f"{name}.yaml") for name in ("train", "eval"))
    repeated = {key for key in set(train) & set(evaluation) - {"defaults", "hydra"}
                if OmegaConf.to_yaml({key: train._get_node(key)}) == OmegaConf.to_yaml({key: evaluation._get_node(key)})}
    assert not repeated  # settings both share live once, in conf/shared.yaml

    composed = compose("eval", overrides=["ckpt_path=a.ckpt"])
    assert composed.seed == compose("train").seed and "log_dir" in composed


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_composes(preset):
    cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert "_target_" in cfg.model and "_target_" in cfg.optimizer


def test_sweep_preset_is_a_multirun_over_its_params():
    cfg = compose("train", overrides=["experiment=lr_batch_channels_grid"], return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "data.batch_size", "model.channels"}


def test_optuna_search_maximises_over_lr_batch_size_channels_and_dropout(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install -e '.[sweep]'")
    cfg = compose("train", overrides=["hparams_search=optuna", f"log_dir={tmp_path}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    # the study is kept in the sweep folder, one per study name, so a rerun continues it
    assert sweeper.study_name == "mnist-cnn"
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna/mnist-cnn/study.db"
    assert not (tmp_path / "optuna").exists()  # composing a config creates no folder; the run does
    assert set(sweeper.params) == {"optimizer.lr", "data.batch_size", "model.channels", "model.dropout"}
    assert sweeper.params["optimizer.lr"].startswith("tag(log,")


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
