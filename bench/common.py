"""What every figure shares: side-by-side timing, medians and percentiles, result rows, tables and files.

Timings on a shared machine are noisy, so every figure runs our way and the seed's way in the same process,
alternating which goes first in each repeat, and reports the median over repeats.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np


@dataclasses.dataclass
class Row:
    """One line of the results table.

    ``ours`` and ``seed`` are medians over repeats (``seed`` is None where the seed has no counterpart), and
    ``better`` says which direction wins: "lower" for times and memory, "higher" for throughputs.
    """

    figure: str
    unit: str
    ours: float | None
    seed: float | None = None
    better: str = "lower"
    goal: str = ""
    goal_met: bool | None = None
    runs: int = 0
    note: str = ""
    ours_runs: list[float] = dataclasses.field(default_factory=list)
    seed_runs: list[float] = dataclasses.field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """How many times better ours is than the seed's way (above 1 means ours wins).

        With paired runs (ours and the seed's measured back to back in each repeat) it is the median of the
        per-run ratios, which cancels the machine's load drifting between repeats; else the ratio of medians.
        """
        if len(self.ours_runs) == len(self.seed_runs) > 0 and min(self.ours_runs + self.seed_runs) > 0:
            return median([self.better_ratio(ours, seed) for ours, seed in zip(self.ours_runs, self.seed_runs)])
        if self.ours is None or self.seed is None or self.ours <= 0 or self.seed <= 0:
            return None
        return self.better_ratio(self.ours, self.seed)

    def better_ratio(self, ours: float, seed: float) -> float:
        return seed / ours if self.better == "lower" else ours / seed

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


def pending_row(figure: str, unit: str, reason: str) -> Row:
    """A row that could not be measured in this run, with the reason in its note."""
    return Row(figure, unit, None, None, note=f"pending: {reason}")


def row_from_runs(figure: str, unit: str, ours_runs: list[float], seed_runs: list[float] | None = None,
                  better: str = "lower", goal: str = "", goal_check: Callable[[Row], bool] | None = None,
                  note: str = "") -> Row:
    """Summarise per-repeat values into a row of medians, checking the goal when one is given."""
    seed_runs = seed_runs or []
    row = Row(figure, unit, median(ours_runs), median(seed_runs) if seed_runs else None, better, goal,
              runs=len(ours_runs), note=note, ours_runs=[round(value, 4) for value in ours_runs],
              seed_runs=[round(value, 4) for value in seed_runs])
    if goal_check is not None:
        row.goal_met = bool(goal_check(row))
    return row


def median(values: list[float]) -> float:
    return float(np.median(values))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def alternate(ways: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each way once per repeat, reversing the order every other repeat; collect what each returns."""
    names = list(ways)
    results: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            results[name].append(ways[name]())
    return results


def time_calls(function: Callable[[], object], count: int, clock: Callable[[], float] = time.perf_counter
               ) -> list[float]:
    """Seconds taken by each of ``count`` calls of ``function`` on ``clock`` (wall time by default)."""
    seconds = []
    for _ in range(count):
        started = clock()
        function()
        seconds.append(clock() - started)
    return seconds


def process_seconds() -> float:
    """CPU seconds this process has used (user + system, every thread): a clock other jobs barely move."""
    return time.process_time()


# ---------------------------------------------------------------------------------------------------------------
# Tables and result files.


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_lines(rows: list[Row], markdown: bool = False) -> list[str]:
    """The results as text lines: a Markdown table, or aligned columns for the terminal."""
    header = ["figure", "unit", "ours", "seed's way", "ratio", "goal", "runs"]
    body = []
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        goal = row.goal + (" (met)" if row.goal_met else " (missed)" if row.goal_met is False else "")
        ours = format_number(row.ours) if row.ours is not None else (row.note or "-")
        body.append([row.figure, row.unit, ours, format_number(row.seed), ratio, goal or "-", str(row.runs or "-")])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        return lines + ["| " + " | ".join(cells) + " |" for cells in body]
    widths = [max(len(cells[index]) for cells in [header, *body]) for index in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
            for cells in [header, *body]]


def machine_description() -> dict:
    """The CPU, core count and library versions, for the results file."""
    import os

    from petseg.distribute import cpu_name

    cpu = cpu_name()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    import tensorflow as tf

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "numpy": np.__version__, "load_average_at_start": load}


def write_results(rows: list[Row], settings: dict, results_dir: Path, started: datetime.datetime) -> tuple[Path, Path]:
    """Write ``<stamp>.json`` and ``<stamp>.md`` (and copies named ``latest``) into ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    document = {"started": started.isoformat(timespec="seconds"), "settings": settings,
                "machine": machine_description(), "rows": [row.as_dict() for row in rows]}
    markdown = "\n".join([f"PetSeg benchmark, {started:%Y-%m-%d %H:%M}, {document['machine']['cpu']} "
                          f"({document['machine']['cores']} cores); medians of the runs shown.", "",
                          *table_lines(rows, markdown=True), ""])
    notes = [f"- {row.figure}: {row.note}" for row in rows if row.note]
    if notes:
        markdown += "\nNotes:\n" + "\n".join(notes) + "\n"
    json_path, markdown_path = results_dir / f"{stamp}.json", results_dir / f"{stamp}.md"
    for path in (json_path, results_dir / "latest.json"):
        path.write_text(json.dumps(document, indent=2) + "\n")
    for path in (markdown_path, results_dir / "latest.md"):
        path.write_text(markdown)
    return json_path, markdown_path
