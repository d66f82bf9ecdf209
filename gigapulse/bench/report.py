"""Reporting shared by every bench: median and spread, markdown, the machine and versions, JSON."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

console = Console(stderr=True)

#: What the project promises (docs/BENCHMARKS.md); a report says which are met.
TARGETS = {
    "ingest_frames_readings_per_s": 500_000,
    "ingest_json_readings_per_s": 15_000,
    "stream_readings_per_s": 300_000,
    "stream_net_readings_per_s": 300_000,
    "stream_ratio_vs_quix": 3.0,
    "freshness_p99_s": 1.0,  # issue #10: robust on any machine of this kind, not a best case
    "recovery_s": 10.0,
    "warehouse_query_median_s": 1.0,
}
LIBRARIES = ("kafka-python", "aiokafka", "faust-streaming", "quixstreams", "confluent-kafka", "duckdb",
             "pyarrow", "numpy", "orjson", "zstandard", "chdb", "polars")

# --------------------------------------------------------------------------- reporting

@dataclass
class BenchResult:
    """What one bench gave ``gigapulse bench all``: its report (the JSON every bench writes: parameters,
    environment, figures as ``median/min/max`` spreads, ratios to its peers, targets met, markdown table),
    or why there is none."""

    name: str
    status: str  # "ok", "skipped" (a required peer is not installed) or "failed"
    note: str = ""
    wall_s: float = 0.0
    report: dict[str, Any] | None = None


def spread(values: list[float]) -> dict[str, Any]:
    """Median and min–max of repeated runs: the median resists one run hit by a noisy neighbour."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def fmt_num(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def fmt_spread(s: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """``median (min–max)`` as the markdown tables show it."""
    if not s:
        return "–"
    u = f" {unit}" if unit else ""
    return f"{fmt_num(s['median'], digits)}{u} ({fmt_num(s['min'], digits)}–{fmt_num(s['max'], digits)})"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _java_version() -> str | None:
    java = shutil.which("java")
    if not java:
        return None
    res = subprocess.run([java, "-version"], capture_output=True, text=True)
    lines = (res.stderr or res.stdout).strip().splitlines()
    return lines[0] if lines else None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The machine, date and versions a figure belongs to (a figure without them cannot be compared)."""
    from infra.broker import KAFKA_VERSION

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    vm = psutil.virtual_memory()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": _cpu_model(),
            "logical_cores": psutil.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "memory_gib": round(vm.total / 2**30, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "os": platform.platform(),
        },
        "python": platform.python_version(),
        "kafka": KAFKA_VERSION,
        "java": _java_version(),
        "libraries": versions,
    }


def environment_markdown(env: dict[str, Any]) -> str:
    m = env["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in env["libraries"].items() if v)
    return (f"{env['date']} · {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB · "
            f"load {'/'.join(str(x) for x in m['load_average_at_start'])} at start · Python {env['python']} · "
            f"Kafka {env['kafka']} ({env['java']}) · {libs}")


def write_report(report: dict[str, Any], out: Path) -> Path:
    """JSON for machines (docs and regressions are compared from it); the markdown goes to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    report["environment"]["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return out


def emit(report: dict[str, Any], out: Path) -> Path:
    """Print the report as markdown (what docs/BENCHMARKS.md quotes) and write its JSON."""
    path = write_report(report, out)
    print(f"## bench {report['bench']}\n\n{environment_markdown(report['environment'])}\n\n{report['table']}\n")
    if report.get("profile_top"):
        print("```\n" + report["profile_top"].strip() + "\n```\n")
    console.print(f"report written to {path}")
    return path


def progress():
    """A rich progress bar on stderr (shown on a terminal, or when GIGAPULSE_PROGRESS is set)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal and not os.environ.get("GIGAPULSE_PROGRESS"))



def profile_top(path: Path, n: int = 25) -> str:
    """The top of a cProfile dump by own time, for the report."""
    import io
    import pstats

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).strip_dirs().sort_stats("tottime").print_stats(n)
    return buf.getvalue()
