"""Statistics over seeds in a sweep's summary: a sweep over `seed` gets, for each setting of
its other swept keys, the mean and sample standard deviation of its completed jobs' metrics,
in summary.md, summary_seeds.csv and the sweep's last lines. Expected figures are computed
here from each job's own files."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import only_sweep_dir, run_train
from omegaconf import OmegaConf

from mnist_cnn.sweep_summary import write_summary

METRICS = ("val/acc_best", "test/acc", "test/loss")


def write_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    """A job folder as a job leaves it: Hydra's snapshot, and metrics.json unless it failed."""
    (sweep_dir / name / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), sweep_dir / name / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (sweep_dir / name / "metrics.json").write_text(json.dumps(metrics))


def random_metrics(generator: np.random.Generator, status: str = "completed") -> dict:
    accuracy = generator.uniform(0.9, 1.0, size=2)
    return {"status": status, "val/acc_best": accuracy[0], "test/acc": accuracy[1],
            "test/loss": generator.uniform(0.01, 0.3), "epochs": 1, "wall_time_s": 1.0}


def completed_by_setting(sweep_dir: Path, key: str | None) -> dict[str, list[dict]]:
    """The metrics.json of each completed job, by the job's value of `key` as typed."""
    settings: dict[str, list[dict]] = {}
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        overrides = dict(line.split("=", 1) for line in OmegaConf.load(overrides_file))
        metrics_file = overrides_file.parent.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        if metrics.get("status") == "completed":
            settings.setdefault(overrides[key] if key else "", []).append(metrics)
    return settings


def seed_rows(sweep_dir: Path, key: str | None) -> dict[str, dict[str, str]]:
    """summary_seeds.csv by its value of `key` ("" when seed alone is swept)."""
    with (sweep_dir / "summary_seeds.csv").open() as file:
        return {row[key] if key else "": row for row in csv.DictReader(file)}


def seeds_section(sweep_dir: Path) -> str:
    return (sweep_dir / "summary.md").read_text().split("## Over seeds\n", 1)[1]


def seeds_table(sweep_dir: Path) -> list[list[str]]:
    """The cells of summary.md's table over seeds, its header first."""
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in seeds_section(sweep_dir).splitlines() if line.startswith("| ") and not line.startswith("| ---")]


def spread_text(metric: str, values: list[float]) -> str:
    shown = (lambda value: f"{value:.2%}") if "acc" in metric else (lambda value: f"{value:.4f}")
    return f"{shown(np.mean(values))} ± {shown(np.std(values, ddof=1))}"


def assert_statistics_match_the_jobs(sweep_dir: Path, key: str | None) -> None:
    expected = completed_by_setting(sweep_dir, key)
    rows = seed_rows(sweep_dir, key)
    table = {row[0] if key else "": dict(zip(seeds_table(sweep_dir)[0], row, strict=True))
             for row in seeds_table(sweep_dir)[1:]}
    assert set(rows) == set(table) == set(expected)
    for setting, jobs in expected.items():
        assert rows[setting]["n"] == table[setting]["n"] == str(len(jobs))
        for metric in METRICS:
            values = [job[metric] for job in jobs]
            assert float(rows[setting][f"{metric}_mean"]) == pytest.approx(np.mean(values))
            assert float(rows[setting][f"{metric}_std"]) == pytest.approx(np.std(values, ddof=1))
            assert table[setting][metric] == spread_text(metric, values)


def test_a_sweep_over_seed_alone_gets_one_row_over_its_completed_jobs(tmp_path):
    generator = np.random.default_rng(0)
    for seed, status in enumerate(["completed", "completed", "diverged", "completed", "failed"], start=1):
        write_job(tmp_path, str(seed - 1), ["optimizer.lr=0.01", f"seed={seed}"],
                  None if status == "failed" else random_metrics(generator, status))

    write_summary(tmp_path)

    assert_statistics_match_the_jobs(tmp_path, key=None)
    header, [row] = seeds_table(tmp_path)[0], seeds_table(tmp_path)[1:]
    assert header == ["n", *METRICS, "not counted"]
    assert row[0] == "3" and row[-1] == "2 (diverged), 4 (failed)"
    assert "jobs not completed are listed, not counted" in (tmp_path / "summary.md").read_text()


def test_each_setting_shows_its_n_and_no_spread_below_two_completed_seeds(tmp_path):
    generator = np.random.default_rng(1)
    jobs = [("0.1", 1, "completed"), ("0.1", 2, "completed"), ("0.01", 1, "completed"), ("0.01", 2, "failed"),
            ("0.5", 1, "failed"), ("0.5", 2, "failed")]
    for number, (lr, seed, status) in enumerate(jobs):
        write_job(tmp_path, str(number), [f"optimizer.lr={lr}", f"seed={seed}"],
                  None if status == "failed" else random_metrics(generator, status))

    write_summary(tmp_path)

    rows = seed_rows(tmp_path, "optimizer.lr")
    table = {row[0]: row for row in seeds_table(tmp_path)[1:]}
    assert [table[lr][1] for lr in ("0.1", "0.01", "0.5")] == [rows[lr]["n"] for lr in ("0.1", "0.01", "0.5")] \
        == ["2", "1", "0"]
    completed = completed_by_setting(tmp_path, "optimizer.lr")
    [alone] = completed["0.01"]
    assert table["0.01"][2:5] == [f"{alone['val/acc_best']:.2%}", f"{alone['test/acc']:.2%}",
                                  f"{alone['test/loss']:.4f}"]
    assert float(rows["0.01"]["test/acc_mean"]) == alone["test/acc"] and rows["0.01"]["test/acc_std"] == ""
    assert "±" in table["0.1"][3]
    assert table["0.5"][2:] == ["-", "-", "-", "4 (failed), 5 (failed)"]
    by_validation = sorted(completed, key=lambda lr: -np.mean([job["val/acc_best"] for job in completed[lr]]))
    assert list(table) == [*by_validation, "0.5"]  # best mean val/acc_best first, nothing to rank last


def test_a_completed_job_without_validation_counts_for_the_test_metrics_only(tmp_path):
    generator = np.random.default_rng(2)
    for seed in (1, 2, 3):
        metrics = random_metrics(generator)
        if seed == 3:
            del metrics["val/acc_best"]  # trainer.check_val_every_n_epoch beyond the run's epochs
        write_job(tmp_path, str(seed - 1), [f"seed={seed}"], metrics)

    write_summary(tmp_path)

    [row] = seeds_table(tmp_path)[1:]
    assert row[0] == "3" and row[1].endswith(" (n=2)") and "(n=" not in row[2]


def test_a_sweep_without_seed_swept_is_summarised_as_before(tmp_path):
    generator = np.random.default_rng(3)
    for number, lr in enumerate(("0.1", "0.01")):
        write_job(tmp_path, str(number), [f"optimizer.lr={lr}", "seed=7"], random_metrics(generator))

    write_summary(tmp_path)

    assert "Over seeds" not in (tmp_path / "summary.md").read_text()
    assert not (tmp_path / "summary_seeds.csv").exists()


@pytest.mark.slow
def test_a_seed_sweep_reports_mean_and_std_of_each_setting_in_its_summary_and_console(tiny_data, tmp_path):
    result = run_train(tiny_data, tmp_path, "seed=1,2,3", "model.channels=[4,8],[8,16]", "trainer.max_epochs=1",
                       multirun=True)

    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = only_sweep_dir(tmp_path)
    assert_statistics_match_the_jobs(sweep_dir, key="model.channels")
    assert set(seed_rows(sweep_dir, "model.channels")) == {"[4,8]", "[8,16]"}
    assert f"over seeds (also in {sweep_dir / 'summary_seeds.csv'}):" in result.stdout
    for line in seeds_section(sweep_dir).splitlines():
        if line.startswith("| "):
            assert line in result.stdout
