"""What every setting allows, checked once right after Hydra composes a config, before anything
is built or written.

Each config node that builds an object (it names a `_target_`) is checked against the rules of
that class, key by key: the class's constructor arguments, with the type, range or choices
each allows. The settings of the entry configs (seed, log_dir, ...) have rules of their own.
A setting that breaks its rule, or a key the class does not take, is one `ConfigError` naming
the key, the value given and what is allowed.
"""

import difflib
import inspect
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from mnist_cnn.console import exit_with
from mnist_cnn.resume import ResumeError
from mnist_cnn.sweep_folders import check_sweep_folder

# Schedulers that span the whole run need its length in optimizer steps, which the Classifier
# fills in once fitting starts: such a run must end.
RUN_LENGTH_ARGUMENT = {
    "torch.optim.lr_scheduler.OneCycleLR": "total_steps",
    "torch.optim.lr_scheduler.CosineAnnealingLR": "T_max",
}


class ConfigError(ValueError):
    """A setting is out of range or of the wrong type; the message names the key and the fix."""


@dataclass(frozen=True)
class Rule:
    allows: Callable[[Any], bool]
    description: str  # what is allowed, as a user reads it: "an integer >= 1, e.g. 128"


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _example(example) -> str:
    return "" if example is None else f", e.g. {example}"


def integer(minimum: int | None = None, maximum: int | None = None, example=None) -> Rule:
    bounds = [f">= {minimum}" if minimum is not None else "", f"<= {maximum}" if maximum is not None else ""]
    return Rule(lambda value: _is_integer(value) and (minimum is None or value >= minimum)
                and (maximum is None or value <= maximum),
                f"an integer {' and '.join(filter(None, bounds))}".rstrip() + _example(example))


def number(above: float | None = None, minimum: float | None = None, below: float | None = None,
           maximum: float | None = None, example=None) -> Rule:
    bounds = {">": above, ">=": minimum, "<": below, "<=": maximum}
    stated = " and ".join(f"{sign} {bound:g}" for sign, bound in bounds.items() if bound is not None)

    def allows(value) -> bool:
        return _is_number(value) and (above is None or value > above) and (minimum is None or value >= minimum) \
            and (below is None or value < below) and (maximum is None or value <= maximum)

    return Rule(allows, f"a number {stated}".rstrip() + _example(example))


def one_of(*choices) -> Rule:
    return Rule(lambda value: any(value == choice and type(value) is type(choice) for choice in choices),
                "one of " + ", ".join("null" if choice is None else str(choice) for choice in choices))


def either(*rules: Rule) -> Rule:
    return Rule(lambda value: any(rule.allows(value) for rule in rules),
                ", or ".join(rule.description for rule in rules))


def list_of(item: Rule, min_length: int = 0, max_length: int | None = None, example=None) -> Rule:
    length = (f"{min_length} to {max_length}" if max_length is not None else f"at least {min_length}")
    return Rule(lambda value: isinstance(value, list) and min_length <= len(value) <= (max_length or len(value))
                and all(item.allows(entry) for entry in value),
                f"a list of {length} entries, each {item.description}" + _example(example))


BOOLEAN = Rule(lambda value: isinstance(value, bool), "true or false")
TEXT = Rule(lambda value: isinstance(value, str) and value != "", "a non-empty text")
NULL = Rule(lambda value: value is None, "null")
SEED = integer(0, 2**32 - 1, example=42)  # the range torch and numpy generators take
FRACTION_BELOW_ONE = number(minimum=0, below=1)
# A nested object (data.augment, a data source, ...): a mapping with its own _target_, checked by its own rules.
OBJECT = Rule(lambda value: isinstance(value, dict) and "_target_" in value, "an object with a _target_")
MD5 = Rule(lambda value: isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value),
           "32 lowercase hex digits")
BATCH_LIMIT = either(integer(0), number(minimum=0, maximum=1))  # batches, or a fraction of them

OPTIMIZER = {"lr": number(above=0, example=0.001), "weight_decay": number(minimum=0, example=0.0005),
             "betas": list_of(FRACTION_BELOW_ONE, 2, 2, example="[0.9,0.999]"), "eps": number(above=0),
             "amsgrad": BOOLEAN, "foreach": either(NULL, BOOLEAN), "fused": either(NULL, BOOLEAN),
             "maximize": BOOLEAN}

# The rules of each class the configs build, by `_target_`: one per constructor argument the
# configs set. Arguments without a rule are passed on as given (Lightning checks its own).
CLASS_RULES: dict[str, dict[str, Rule]] = {
    "mnist_cnn.data.MNISTDataModule": {
        "data_dir": TEXT, "batch_size": integer(1, example=128), "val_size": integer(1, example=5000),
        "num_workers": integer(0), "seed": SEED, "redownload": BOOLEAN, "on_device": BOOLEAN,
        "augment": either(NULL, OBJECT), "dataset": TEXT, "class_names": list_of(TEXT, 2),
        "preprocessing": one_of("digit", "product"), "sources": list_of(OBJECT, 1),
        "md5": Rule(lambda value: isinstance(value, dict) and all(MD5.allows(digest) for digest in value.values()),
                    "a mapping of file names to MD5s (32 lowercase hex digits)"),
    },
    "mnist_cnn.augment.RandomAffine": {
        "rotation_deg": number(minimum=0, maximum=180, example=10), "translation": FRACTION_BELOW_ONE,
        "scale": FRACTION_BELOW_ONE, "horizontal_flip": BOOLEAN, "interpolation": one_of("bilinear", "nearest"),
    },
    "mnist_cnn.mnist_files.TorchvisionMirrors": {"dataset": TEXT},
    "mnist_cnn.mnist_files.NpmPackage": {"package": TEXT, "folder": TEXT},
    "mnist_cnn.mnist_files.DebianPackage": {"package": TEXT, "folder": TEXT},
    "mnist_cnn.model.CNN": {
        "channels": list_of(integer(1), 1, 4, example="[32,64]"),  # each block halves the image: 28 -> 1 at most
        "kernel_size": Rule(lambda value: _is_integer(value) and 1 <= value <= 27 and value % 2 == 1,
                            "an odd integer from 1 to 27, e.g. 3"),
        "num_classes": integer(2), "dropout": FRACTION_BELOW_ONE, "batch_norm": BOOLEAN,
        "channels_last": BOOLEAN, "compile": BOOLEAN, "convs_per_block": integer(1), "global_pool": BOOLEAN,
        "hidden_units": either(NULL, integer(1, example=256)),
    },
    "torch.optim.Adam": OPTIMIZER,
    "torch.optim.AdamW": OPTIMIZER,
    "torch.optim.SGD": {"lr": number(above=0, example=0.05), "momentum": number(minimum=0, below=1, example=0.9),
                        "dampening": number(minimum=0, maximum=1), "weight_decay": number(minimum=0),
                        "nesterov": BOOLEAN, "foreach": either(NULL, BOOLEAN), "maximize": BOOLEAN},
    "torch.optim.lr_scheduler.CosineAnnealingLR": {"eta_min": number(minimum=0)},
    "torch.optim.lr_scheduler.OneCycleLR": {
        "max_lr": number(above=0), "pct_start": number(above=0, below=1, example=0.25),
        "anneal_strategy": one_of("cos", "linear"), "div_factor": number(above=0),
        "final_div_factor": number(above=0), "three_phase": BOOLEAN,
    },
    "lightning.Trainer": {
        "default_root_dir": TEXT,
        "accelerator": one_of("auto", "cpu", "gpu", "cuda", "mps"),
        "devices": either(integer(1), one_of(-1, "auto"), list_of(integer(0), 1)),
        "num_nodes": integer(1), "strategy": either(one_of("auto", "ddp"), OBJECT),
        "precision": one_of("32-true", "32", 32, "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"),
        "max_epochs": either(integer(1), one_of(-1)), "min_epochs": either(NULL, integer(0)),
        "max_steps": either(integer(1), one_of(-1)),
        "limit_train_batches": BATCH_LIMIT, "limit_val_batches": BATCH_LIMIT, "limit_test_batches": BATCH_LIMIT,
        "overfit_batches": BATCH_LIMIT, "fast_dev_run": either(BOOLEAN, integer(1)),
        "log_every_n_steps": integer(0), "check_val_every_n_epoch": either(NULL, integer(1)),
        "val_check_interval": either(NULL, integer(1), number(above=0, maximum=1)),
        "num_sanity_val_steps": integer(-1), "accumulate_grad_batches": integer(1),
        "gradient_clip_val": either(NULL, number(minimum=0)),
        "enable_progress_bar": BOOLEAN, "enable_checkpointing": BOOLEAN, "enable_model_summary": BOOLEAN,
        "detect_anomaly": BOOLEAN, "deterministic": either(BOOLEAN, one_of("warn")), "benchmark": either(NULL, BOOLEAN),
        "profiler": either(NULL, one_of("simple", "advanced"), OBJECT),
        "use_distributed_sampler": Rule(lambda value: value is False, "false: MNISTDataModule deals each rank its "
                                        "own batches, which Lightning's sampler would split again"),
        "plugins": list_of(OBJECT),
    },
    "mnist_cnn.distributed.HydraDDPStrategy": {},
    "mnist_cnn.checkpoint_io.AtomicCheckpointIO": {},
    "lightning.pytorch.profilers.SimpleProfiler": {"dirpath": TEXT, "filename": TEXT},
    "lightning.pytorch.loggers.TensorBoardLogger": {
        "save_dir": TEXT, "name": either(NULL, Rule(lambda value: isinstance(value, str), "a text")),
        "version": either(NULL, integer(0), Rule(lambda value: isinstance(value, str), "a text")),
        "default_hp_metric": BOOLEAN,
    },
    "mnist_cnn.experiment_trackers.CSVLogger": {
        "save_dir": TEXT, "flush_logs_every_n_steps": integer(1, example=100), "purge_step": either(NULL, integer(0)),
    },
    "lightning.pytorch.loggers.MLFlowLogger": {"tracking_uri": TEXT, "experiment_name": TEXT},
    "lightning.pytorch.loggers.WandbLogger": {"project": TEXT, "offline": BOOLEAN},
    "mnist_cnn.run_checkpoint.RunCheckpoint": {
        "dirpath": TEXT, "filename": TEXT, "monitor": TEXT, "mode": one_of("max", "min"), "save_last": BOOLEAN,
        "save_top_k": integer(-1), "enable_version_counter": BOOLEAN,
        "every_n_train_steps": either(NULL, integer(0)), "every_n_epochs": either(NULL, integer(0)),
    },
    "lightning.pytorch.callbacks.LearningRateMonitor": {"logging_interval": one_of("step", "epoch", None)},
    "lightning.pytorch.callbacks.EarlyStopping": {
        "monitor": TEXT, "mode": one_of("max", "min"), "patience": integer(1, example=3),
        "min_delta": number(minimum=0, example=0.001),
    },
    "mnist_cnn.stopping.CheckpointOnInterrupt": {},
    "mnist_cnn.stopping.StopOnDivergence": {"check_every_n_steps": integer(1, example=20),
                                            "max_loss": either(NULL, number(above=0))},
    "mnist_cnn.error_analysis.callback.ErrorAnalysis": {
        "figures_dir": TEXT, "samples": integer(1, example=36), "mistakes": integer(0, example=36),
        "calibration_bins": integer(1, example=15), "top_confusions": integer(0, example=10),
    },
    "mnist_cnn.trial_pruning.PruneTrial": {"trial_number": either(NULL, integer(0)), "monitor": TEXT},
}

# The settings of the entry configs themselves (train.yaml, eval.yaml, predict.yaml, export.yaml).
PATH_OR_NULL = either(NULL, TEXT)
ENTRY_RULES: dict[str, Rule] = {
    "seed": SEED, "log_dir": TEXT, "ckpt_path": PATH_OR_NULL, "resume": one_of(None, "latest"),
    "threads": either(NULL, integer(1)), "reuse_freed_memory": BOOLEAN, "optuna_trial": either(NULL, integer(0)),
    "inputs": either(TEXT, list_of(TEXT, 1)), "json": BOOLEAN, "figures_dir": PATH_OR_NULL,
    "format": one_of("onnx", "torchscript"),
}
# Groups whose node builds one object (or, for callbacks, a mapping of objects); null or empty
# where the option builds nothing (scheduler=none, ~logger).
OBJECT_GROUPS = ("data", "model", "optimizer", "scheduler", "trainer", "logger")
# Groups whose node may be a mapping of objects: the callbacks, and the trackers of logger=many.
MAPPING_GROUPS = ("callbacks", "logger")
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
_UNKNOWN = object()


def _value(node: DictConfig | ListConfig, key) -> Any:
    """The setting's resolved value as plain Python; Hydra's runtime values (the job's folder)
    are unknown before the job starts and are skipped (the job checks them again)."""
    try:
        value = node[key]
    except (InterpolationResolutionError, MissingMandatoryValue):
        return _UNKNOWN
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except (InterpolationResolutionError, MissingMandatoryValue):
            return _UNKNOWN
    return value


def _refuse(key: str, value: Any, allowed: str) -> ConfigError:
    shown = value if isinstance(value, str) else json.dumps(value)  # as typed: true, null, [16, 0]
    return ConfigError(f"{key}={shown} is not allowed: it must be {allowed}")


def check_object(node: DictConfig, key: str) -> None:
    """Check the settings of the object `node` builds (`key` is where it sits in the config)."""
    target = node.get("_target_")
    rules = CLASS_RULES.get(target, {})
    try:
        parameters = inspect.signature(get_class(target)).parameters
    except Exception as error:  # noqa: BLE001 - an import fails in as many ways as a module can
        raise ConfigError(f"{key}._target_={target} cannot be imported ({type(error).__name__}): "
                          "name a class that is installed") from None
    takes_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    for name in node:
        if name in HYDRA_KEYS:
            continue
        if name not in parameters and not takes_any:
            close = difflib.get_close_matches(name, parameters, n=1)
            raise ConfigError(f"{key}.{name} is not a setting of {target}: "
                              + (f"did you mean {key}.{close[0]}?" if close else "remove it"))
        value = _value(node, name)
        if value is _UNKNOWN:
            continue
        rule = rules.get(name)
        if rule is not None and not rule.allows(value):
            raise _refuse(f"{key}.{name}", value, rule.description)
        _check_nested(node[name], f"{key}.{name}")


def _check_nested(node, key: str) -> None:
    """Objects inside a setting: data.augment, the data sources, the trainer's plugins."""
    if isinstance(node, DictConfig) and "_target_" in node:
        check_object(node, key)
    elif isinstance(node, ListConfig):
        for index, item in enumerate(node):
            if isinstance(item, DictConfig) and "_target_" in item:
                check_object(item, f"{key}[{index}]")


def check_settings(cfg: DictConfig, require_all: bool = True) -> None:
    """Every setting of a composed config (with or without its `hydra` node) against its rule;
    `require_all`: a setting left `???` is refused too."""
    for key in cfg:
        if require_all and OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is missing: give it on the command line, {key}=...")
    for key, rule in ENTRY_RULES.items():
        if key in cfg and (value := _value(cfg, key)) is not _UNKNOWN and not rule.allows(value):
            raise _refuse(key, value, rule.description)
    for group in OBJECT_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and "_target_" in node:
            check_object(node, group)
    for group in MAPPING_GROUPS:
        mapping: Mapping | None = cfg.get(group)
        if isinstance(mapping, DictConfig) and "_target_" not in mapping:
            for name in mapping:
                if isinstance(mapping[name], DictConfig) and "_target_" in mapping[name]:
                    check_object(mapping[name], f"{group}.{name}")


def check_config(cfg: DictConfig, require_all: bool = True) -> None:
    """Reject bad settings before any work is done: each setting, then the rules that span several."""
    check_settings(cfg, require_all)
    if "model" in cfg and "data" in cfg and cfg.model.num_classes != len(cfg.data.class_names):
        raise ConfigError(f"model.num_classes={cfg.model.num_classes}, but the data has {len(cfg.data.class_names)} "
                          "classes (data.class_names): leave model.num_classes at its default, one output per class")
    check_run_length(cfg)
    check_early_stopping(cfg)


def check_run_length(cfg: DictConfig) -> None:
    """A schedule that spans the run (cosine, one-cycle) needs the run to end."""
    scheduler = OmegaConf.select(cfg, "scheduler._target_")
    no_step_limit = OmegaConf.select(cfg, "trainer.max_steps", default=-1) in (-1, None)
    if scheduler in RUN_LENGTH_ARGUMENT and cfg.trainer.max_epochs == -1 and no_step_limit:
        raise ConfigError(f"trainer.max_epochs=-1 (no limit) gives {scheduler.rsplit('.', 1)[-1]} no run length "
                          "to span: set trainer.max_epochs or +trainer.max_steps, or use scheduler=none")


def check_early_stopping(cfg: DictConfig) -> None:
    """Stopping early cuts a one-cycle schedule off before it anneals, at a high learning rate
    (a cosine schedule, cut short, has at least decayed from its start)."""
    callbacks = cfg.get("callbacks") or {}
    stopping = [name for name in callbacks
                if OmegaConf.select(callbacks, f"{name}._target_") == "lightning.pytorch.callbacks.EarlyStopping"]
    if stopping and OmegaConf.select(cfg, "scheduler._target_") == "torch.optim.lr_scheduler.OneCycleLR":
        raise ConfigError(f"callbacks.{stopping[0]} can stop the run before scheduler=onecycle has annealed the "
                          "learning rate: use scheduler=cosine or scheduler=none with early stopping, "
                          "or callbacks=default")


class CheckSettings(Callback):
    """Checks the composed config as soon as Hydra has it, before the run's or the sweep's folder
    is made: a bad value leaves nothing behind that reads as a result. Each job checks its own
    config again (its swept values, or the config of the run it resumes)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A resumed run's overrides apply to the config it kept, which the job checks.
        if not _continues_a_run(config):
            _check_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A sweep's jobs each start a run of their own; only eval.py's sweep takes checkpoints.
        if _continues_a_run(config):
            key = f"resume={config.resume}" if config.resume else f"ckpt_path={config.ckpt_path}"
            exit_with(f"{key} continues one run and cannot be part of a sweep (-m): run it without -m; "
                       "a sweep job requeued into its own folder resumes by itself, "
                       "and an Optuna search by running its command again")
        _check_or_exit(config, require_all=False)  # a swept key has no value before its job
        try:
            check_sweep_folder(config)
        except ResumeError as error:
            exit_with(str(error))


def _continues_a_run(config: DictConfig) -> bool:
    """A training command that resumes a run (eval.py's ckpt_path only names what to test)."""
    return "resume" in config and bool(config.resume or config.ckpt_path)


def _check_or_exit(config: DictConfig, require_all: bool = True) -> None:
    try:
        check_config(config, require_all)
    except ConfigError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        exit_with(str(error))
