"""Smoke test of the benchmark: its core functions run end to end on tiny inputs and fill every row.

Nothing here checks a timing: the machine is shared, so only shapes, names and signs are asserted.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest

from bench import processes
from bench.common import Row, table_lines, write_results
from bench.run import Settings, run_benchmark
from conftest import ROOT, copy_checkpoint

IN_PROCESS_FIGURES = ("request", "batch", "training", "epochs")


@pytest.fixture(scope="module")
def bench_weights(tmp_path_factory):
    """The shipped tutorial checkpoint alone, so the best checkpoint is the tutorial one."""
    weights_dir = tmp_path_factory.mktemp("bench-weights")
    return copy_checkpoint(ROOT / "weights" / "tutorial.keras", weights_dir / "tutorial.keras").parent


def tiny_settings() -> Settings:
    return dataclasses.replace(Settings.quick(repeats=1), requests_per_run=3, batch_photos=3, train_photos=8,
                               train_photo_sides=(96, 128), train_image_size=32, train_batch_size=4,
                               preset_image_sizes={"tutorial": 32, "finetune": 32},
                               preset_batch_sizes={"tutorial": 4, "finetune": 4}, eager=True)


def test_quick_benchmark_fills_every_row_with_positive_numbers(bench_weights, tmp_path):
    rows = run_benchmark(bench_weights, tiny_settings(), IN_PROCESS_FIGURES, tmp_path, log=lambda message: None)
    figures = [row.figure for row in rows]
    expected_prefixes = [
        "Request latency p50, tutorial", "Request latency p95, tutorial", "Request CPU time p50, tutorial",
        "Batch throughput",
        "Training, first epoch", "Training, steady epoch", "Training, first + steady epoch",
        "Input pipeline alone, first epoch", "Input pipeline alone, steady epoch",
        "First epoch, decode a photo", "First epoch, resize a photo",
        "Epoch time, tutorial", "Epoch time, finetune frozen encoder", "Epoch time, finetune fine-tune phase",
    ]
    assert len(figures) == len(expected_prefixes)
    for figure, prefix in zip(figures, expected_prefixes):
        assert figure.startswith(prefix), (figure, prefix)
    for row in rows:
        assert row.ours is not None and row.ours > 0, row
        assert row.runs == 1 and all(value > 0 for value in row.ours_runs + row.seed_runs), row
        if not row.figure.startswith("Epoch time"):
            assert row.seed is not None and row.seed > 0 and row.ratio > 0, row
    # The goals are judged (met or not), never asserted: each judgement follows its rule.
    for row in rows:
        if row.figure.startswith("Request latency p50"):
            assert row.goal_met == (row.ours <= 8.0 and row.ratio >= 10.0), row  # Issue 9's goal.
        elif row.figure.startswith("Training, first + steady epoch"):
            assert row.goal_met == (row.ratio >= 1.5), row
        else:
            assert row.goal == "" and row.goal_met is None, row

    json_path, markdown_path = write_results(rows, {"quick": True}, tmp_path / "results",
                                             __import__("datetime").datetime.now())
    markdown = markdown_path.read_text()
    assert json_path.is_file() and all(row.figure in markdown for row in rows)
    assert len(table_lines(rows)) == len(rows) + 1


def test_peak_memory_of_a_child_process_is_measured(tmp_path):
    command = [sys.executable, "-c", "import time; block = bytearray(80 * 2**20); time.sleep(0.5)"]
    peak = processes.training_peak_memory(command, tmp_path / "child.log")
    assert peak >= 80 * 2**20


def test_rows_without_a_measurement_say_why():
    from bench.common import pending_row

    row = pending_row("Start-up", "s", "app.py is not in the repository yet")
    assert row.ours is None and row.ratio is None and "pending" in row.note
    assert "pending" in table_lines([row])[1]
    assert Row("x", "ms", 10.0, 30.0, "lower").ratio == pytest.approx(3.0)
    assert Row("x", "images/s", 30.0, 10.0, "higher").ratio == pytest.approx(3.0)
