"""One table and one figure for a whole sweep: summary.csv, summary.md, summary.png.

Built from the job folders on disk (`<sweep>/<job>/.hydra/overrides.yaml` and the
`metrics.json` a finished job writes), so the Hydra callback at the end of a multirun and
`scripts/summarize.py` give the same result. A job without metrics.json failed, unless a
process of it still runs (another worker of a shared Optuna study: `job_lock`); it is
listed, never dropped. So is a job refused because its folder held another job's run: Hydra's
snapshot of it, beside that run's, is all it leaves. Rows are sorted by val/acc_best: select by validation, report test.
A sweep over `seed` adds the statistics over seeds: summary_seeds.csv, and a table in summary.md.
"""

import csv
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from mnist_cnn.job_lock import is_running
from mnist_cnn.overrides import parse_overrides, short_value

log = logging.getLogger(__name__)

METRICS = ("val/acc_best", "test/acc", "test/loss", "epochs", "wall_time_s")
SELECTED_BY, REPORTED = "val/acc_best", "test/acc"
# What a job that ran to its end reports: a diverged or pruned trial is a finding of the sweep.
RESULTS = ("completed", "diverged", "pruned")
# Which sweep launched a job. Workers of one Optuna study share its folder, and each judges only
# its own jobs: the sweep's id reaches its jobs through the environment, wherever the launcher
# runs them (this process, joblib and submitit workers, SLURM jobs), and each job writes it
# beside its snapshot of the overrides.
SWEEP_ID_VARIABLE = "MNIST_CNN_SWEEP_ID"
SWEEP_ID_FILE = "sweep_id"
# What each job leaves at its start, in its folder: Hydra's snapshot of its overrides.
JOB_SNAPSHOTS = "*/.hydra/overrides.yaml"
# Swept, it repeats each setting of the other swept keys: the summary adds each setting's mean and spread.
SEED = "seed"
SEED_METRICS = ("val/acc_best", "test/acc", "test/loss")
SEEDS_CSV = "summary_seeds.csv"


@dataclass
class Job:
    name: str  # its folder, relative to the sweep folder
    overrides: list[str]  # as Hydra recorded them, e.g. "optimizer.lr=0.001"
    metrics: dict[str, Any]  # empty when the job wrote no metrics.json
    sweep_id: str | None  # of the sweep that launched it (None: a job of an older version)
    running: bool  # no metrics.json yet, but a process of the job is alive
    refused: bool = False  # it found another job's run in its folder (sweep_folders.check_same_job)

    @property
    def status(self) -> str:
        if self.refused:
            return "refused"
        return self.metrics.get("status", "running" if self.running else "failed")

    @cached_property
    def values(self) -> dict[str, Any]:
        return parse_overrides(self.overrides)


def read_jobs(sweep_dir: Path) -> list[Job]:
    """The sweep's jobs, completed ones first, best val/acc_best first."""
    jobs = []
    for overrides_file in sweep_dir.glob(JOB_SNAPSHOTS):
        folder = overrides_file.parent.parent
        running = is_running(folder)  # asked before reading metrics.json, which a job writes while running
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        overrides = list(OmegaConf.load(overrides_file))
        jobs.append(Job(str(folder.relative_to(sweep_dir)), overrides, metrics, sweep_id_of(overrides_file.parent),
                        running=running and not metrics))
        # A later job that found this one's run in its folder left only Hydra's snapshot of itself.
        for later in folder.glob(".hydra/resumed_*/overrides.yaml"):
            later_overrides = list(OmegaConf.load(later))
            if parse_overrides(later_overrides) != parse_overrides(overrides):
                jobs.append(Job(str(later.parent.relative_to(sweep_dir)), later_overrides, {},
                                sweep_id_of(later.parent), running=False, refused=True))
    if not jobs:
        raise FileNotFoundError(f"{sweep_dir} holds no job folders (<job>/.hydra/overrides.yaml): "
                                "is it the folder of a `python train.py -m ...` sweep?")
    return sorted(jobs, key=lambda job: (job.status != "completed", -job.metrics.get(SELECTED_BY, -1.0),
                                         job.name.zfill(9)))


def sweep_id_of(snapshot_dir: Path) -> str | None:
    file = snapshot_dir / SWEEP_ID_FILE
    return file.read_text() if file.exists() else None


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs, in the order they were typed."""
    seen: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in job.values.items():
            seen.setdefault(key, set()).add(short_value(value))
    return [key for key, values in seen.items()
            if len(values) > 1 or any(key not in job.values for job in jobs)]


def rows(jobs: list[Job], keys: list[str]) -> list[dict[str, Any]]:
    table = []
    for job in jobs:
        values = job.values
        table.append({"job": job.name,
                      **{key: short_value(values[key]) if key in values else "" for key in keys},
                      **{metric: job.metrics.get(metric, "") for metric in METRICS},
                      "status": job.status,
                      "overrides": " ".join(job.overrides)})
    return table


def metric_text(metric: str, value: Any) -> str:
    if value == "":
        return "-"
    return f"{value:.2%}" if "acc" in metric else f"{value:.4f}" if metric == "test/loss" else str(value)


@dataclass
class SeedGroup:
    """The jobs of one setting of the swept keys other than seed; only completed ones are counted."""
    setting: dict[str, str]  # swept key -> short value, seed left out
    jobs: list[Job]

    @property
    def counted(self) -> list[Job]:
        return [job for job in self.jobs if job.status == "completed"]

    def values(self, metric: str) -> list[float]:
        # A completed job may lack val/acc_best (no validation ran): it counts for the others.
        return [job.metrics[metric] for job in self.counted if metric in job.metrics]

    def not_counted(self) -> str:
        return ", ".join(f"{job.name} ({job.status})" for job in self.jobs if job.status != "completed")

    def row(self) -> dict[str, Any]:
        """For summary_seeds.csv: the setting, n, each metric's mean and sample standard deviation."""
        row: dict[str, Any] = {**self.setting, "n": len(self.counted)}
        for metric in SEED_METRICS:
            values = self.values(metric)
            row[f"{metric}_mean"] = fmean(values) if values else ""
            row[f"{metric}_std"] = stdev(values) if len(values) > 1 else ""
        return {**row, "not_counted": self.not_counted()}

    def cell(self, metric: str) -> str:
        """`99.61% ± 0.03%`; one value alone has no spread, and a count unlike n is given."""
        values = self.values(metric)
        text = metric_text(metric, fmean(values) if values else "")
        if len(values) > 1:
            text += " ± " + metric_text(metric, stdev(values))
        return text + (f" (n={len(values)})" if values and len(values) != len(self.counted) else "")


def seed_groups(jobs: list[Job], keys: list[str]) -> list[SeedGroup]:
    """The jobs by their setting of the swept keys other than seed, best mean val/acc_best
    first; none when seed is not swept."""
    if SEED not in keys:
        return []
    others = [key for key in keys if key != SEED]
    groups: dict[tuple[str, ...], SeedGroup] = {}
    for job in jobs:
        setting = {key: short_value(job.values[key]) if key in job.values else "" for key in others}
        groups.setdefault(tuple(setting.values()), SeedGroup(setting, [])).jobs.append(job)
    return sorted(groups.values(), key=lambda group: -fmean(group.values(SELECTED_BY) or [-1.0]))


def seeds_table(groups: list[SeedGroup]) -> list[str]:
    others = list(groups[0].setting)
    header = [*others, "n", *SEED_METRICS, "not counted"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for group in groups:
        lines.append("| " + " | ".join([*(value or "-" for value in group.setting.values()), str(len(group.counted)),
                                         *(group.cell(metric) for metric in SEED_METRICS),
                                         group.not_counted() or "-"]) + " |")
    return lines


def markdown(jobs: list[Job], keys: list[str], sweep_dir: Path) -> str:
    common = [f"{key}={short_value(value)}" for key, value in jobs[0].values.items() if key not in keys]
    failed = [f"{job.name} ({job.status})" for job in jobs if job.status != "completed"]
    header = ["job", *keys, *METRICS, "status"]
    lines = [f"# Sweep {sweep_dir.name}: {len(jobs)} jobs, {len(failed)} not completed", "",
             f"Every job: `{' '.join(common)}`" if common else "Every job: the defaults", "",
             f"Sorted by {SELECTED_BY} (selection); {REPORTED} is reported, not selected on.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows(jobs, keys):
        lines.append("| " + " | ".join([row["job"], *(row[key] or "-" for key in keys),
                                         *(metric_text(metric, row[metric]) for metric in METRICS),
                                         row["status"]]) + " |")
    if failed:
        lines += ["", f"Not completed: jobs {', '.join(failed)}; each folder's train.log says why."]
    if groups := seed_groups(jobs, keys):
        lines += ["", "## Over seeds", "",
                  "Mean ± sample standard deviation over the n completed jobs of each setting; jobs not "
                  f"completed are listed, not counted. Sorted by mean {SELECTED_BY}. Also in {SEEDS_CSV}.", "",
                  *seeds_table(groups)]
    return "\n".join(lines) + "\n"


def x_positions(axes, values: list[Any]) -> Callable[[Any], float]:
    """Lays parameter values along the x axis: numbers on a number line (log when they span
    a decade or more, like learning rates), anything else as evenly spaced categories."""
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        distinct = sorted(set(values))
        if distinct[0] > 0 and distinct[-1] / distinct[0] >= 10:
            axes.set_xscale("log")
        if len(distinct) <= 6:  # a grid: label exactly the values tried
            axes.set_xticks(distinct, [short_value(value) for value in distinct])
            axes.minorticks_off()
        return lambda value: value
    labels = sorted({short_value(value) for value in values}, key=lambda label: (len(label), label))
    axes.set_xticks(range(len(labels)), labels)
    axes.set_xlim(-0.5, len(labels) - 0.5)
    return lambda value: labels.index(short_value(value))


def plot(jobs: list[Job], keys: list[str], sweep_dir: Path) -> Figure:
    """The selection metric and the test accuracy against each swept parameter, one panel each."""
    done = [job for job in jobs if job.status == "completed"]
    not_done = [job for job in jobs if job.status != "completed"]
    panels = keys or ["job"]  # nothing swept: one point per job
    columns = min(len(panels), 3)
    panel_rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.8 * panel_rows + 0.4), dpi=120, layout="constrained")
    for index, key in enumerate(panels):
        axes = figure.add_subplot(panel_rows, columns, index + 1)
        value_of = (lambda job: job.name) if key == "job" else (lambda job, key=key: job.values.get(key))
        x = x_positions(axes, [value_of(job) for job in jobs])
        validated = [job for job in done if SELECTED_BY in job.metrics]  # not a run stopped before validation
        axes.scatter([x(value_of(job)) for job in validated], [job.metrics[SELECTED_BY] for job in validated],
                     s=50, color="tab:blue", alpha=0.7, label=f"{SELECTED_BY} (selects)")
        axes.scatter([x(value_of(job)) for job in done], [job.metrics[REPORTED] for job in done], s=50,
                     facecolors="none", edgecolors="tab:orange", linewidths=1.5, label=f"{REPORTED} (reported)")
        if not_done:  # drawn along the bottom edge: they have no accuracy
            axes.scatter([x(value_of(job)) for job in not_done], [0.04] * len(not_done), marker="x",
                         s=60, color="tab:red", transform=axes.get_xaxis_transform(), label="not completed")
        axes.margins(x=0.15, y=0.12)
        axes.set_xlabel(key)
        axes.set_ylabel("accuracy")
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="small", loc="best")
    figure.suptitle(f"Sweep {sweep_dir.name}: {len(jobs)} jobs, {len(not_done)} not completed")
    return figure


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def write_summary(sweep_dir: Path) -> list[Job]:
    """Write summary.csv, summary.md and summary.png into `sweep_dir`, and summary_seeds.csv when
    seed is swept; returns its jobs, best first."""
    jobs = read_jobs(sweep_dir)
    keys = swept_keys(jobs)
    write_csv(sweep_dir / "summary.csv", rows(jobs, keys))
    if groups := seed_groups(jobs, keys):
        write_csv(sweep_dir / SEEDS_CSV, [group.row() for group in groups])
    (sweep_dir / "summary.md").write_text(markdown(jobs, keys, sweep_dir))
    plot(jobs, keys, sweep_dir).savefig(sweep_dir / "summary.png")
    return jobs


class SweepSummary(Callback):
    """Hydra calls this once every job of a multirun has ended, failed ones included.

    Like a test runner, the sweep then exits non-zero when a job it ran failed, naming it last.
    A folder kept from an earlier run of the same sweep (an Optuna study grows in one folder)
    is summarised too, but its failures were reported by that run; so are the jobs of another
    worker sharing the folder, which judges its own.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = os.environ[SWEEP_ID_VARIABLE] = uuid.uuid4().hex

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # In the job's process. No snapshot (a DDP rank's): nothing of the job to mark.
        sweep_id = os.environ.get(SWEEP_ID_VARIABLE)
        if sweep_id and config.hydra.output_subdir is not None:
            (Path(config.hydra.runtime.output_dir) / config.hydra.output_subdir / SWEEP_ID_FILE).write_text(sweep_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not any(sweep_dir.glob(JOB_SNAPSHOTS)):  # a search whose places others held
            log.info("no job has run in %s yet: nothing to summarise", sweep_dir)
            return
        jobs = write_summary(sweep_dir)
        log.info("sweep summary: %s", sweep_dir / "summary.md")
        if groups := seed_groups(jobs, swept_keys(jobs)):
            log.info("over seeds (also in %s):\n%s", sweep_dir / SEEDS_CSV, "\n".join(seeds_table(groups)))
        if not_completed := [f"{job.name} ({job.status})" for job in jobs if job.status != "completed"]:
            log.warning("jobs not completed: %s (see their train.log)", ", ".join(not_completed))
        ran = [job for job in jobs if job.sweep_id == self.sweep_id]
        if failed := [job.name for job in ran if job.status not in (*RESULTS, "running")]:
            # SystemExit, not an Exception: Hydra turns a callback's exceptions into warnings.
            raise SystemExit(f"sweep failed: {len(failed)} of {len(ran)} jobs failed: {', '.join(failed)} "
                             f"(their train.log in {sweep_dir} says why)")
