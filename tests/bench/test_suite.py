"""``gigapulse bench all``: a quick run of a real bench rewrites only the figures section of the document."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gigapulse.bench import suite
from gigapulse.bench.report import BenchResult

REPO = Path(__file__).resolve().parents[2]
HEAD = "# Benchmarks\n\nHand-written prose before the figures: *kept*.\n\n## Latest figures\n\n"
TAIL = "\n\n## Notes\n\nProse after the figures, with a table:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
OLD = f"{suite.BEGIN}\nold figures: 12,345 readings/s\n{suite.END}"


def gigapulse(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIGAPULSE_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "gigapulse.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def test_a_quick_run_rewrites_the_section_with_real_figures_and_keeps_the_prose(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(HEAD + OLD + TAIL)
    res = gigapulse("bench", "all", "--quick", "--only", "bridges-modbus", "--out", str(doc),
                    "--json-dir", str(tmp_path / "json"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "[1/1] bridges-modbus: ok" in res.stderr
    text = doc.read_text()
    assert text.startswith(HEAD + suite.BEGIN) and text.endswith(suite.END + TAIL)  # prose byte for byte
    assert "12,345" not in text  # the old figures are gone
    body = text[len(HEAD):-len(TAIL)]
    assert "Quick run" in body and "### bridges-modbus" in body
    assert f"| Python | {sys.version.split()[0]} |" in body and "Kafka | 4." in body
    assert re.search(r"\| machine \| .+, \d+ physical / \d+ logical cores, [\d.]+ GiB RAM", body), body
    assert "duckdb " in body and "pyarrow " in body and "faust-streaming " in body and "dagster" in body
    # the bench's own figures: polls/s as a median with its min–max, measured just now
    polls = re.search(r"\| polls/s \(target\) \| ([\d,.]+) \(([\d,.]+)–([\d,.]+)\)", body)
    assert polls and float(polls.group(1).replace(",", "")) > 0, body
    report = json.loads((tmp_path / "json" / "bridges-modbus.json").read_text())
    assert report["bench"] == "bridges-modbus" and report["figures"]
    assert "| `bridges-modbus` | ok |" in body
    # a second run replaces the section again and still keeps the prose
    res = gigapulse("bench", "all", "--quick", "--only", "bridges-modbus", "--no-write", "--out", str(doc),
                    "--json-dir", str(tmp_path / "json"), cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith(suite.BEGIN), res.stderr[-2000:]
    assert doc.read_text() == text  # --no-write prints, writes nothing


def test_bench_all_runs_what_make_bench_runs_in_its_order():
    lines = (REPO / "Makefile").read_text().split("\nbench:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    make = [line.strip().replace("$(BIN)/", "") for line in lines]
    assert make == [b.command for b in suite.BENCHES]


def test_rewrite_replaces_between_the_markers_only():
    new = f"{suite.BEGIN}\nnew\n{suite.END}"
    assert suite.rewrite(HEAD + OLD + TAIL, new) == HEAD + new + TAIL
    assert suite.rewrite("# prose\n", new) == "# prose\n\n" + new + "\n"  # no markers: appended
    for bad in (HEAD + OLD + OLD, HEAD + suite.END + suite.BEGIN, HEAD + suite.BEGIN + TAIL):
        with pytest.raises(ValueError, match="markers"):
            suite.rewrite(bad, new)


def test_the_section_gives_each_benchs_ratio_to_its_peer_and_the_skipped_ones():
    report = {"bench": "stream", "table": "| measure | x |\n|---|---|\n| a | 1 |",
              "results": {"ratio_vs_quix": {"median": 22.5, "min": 20.4, "max": 24.2, "runs": [20.4, 22.5, 24.2]}},
              "met": {"stream_readings_per_s": True, "stream_ratio_vs_quix": False}}
    text = suite.section([BenchResult("stream", "ok", "", 360.0, report),
                          BenchResult("warehouse", "skipped", "its peer chDB is not installed")], False,
                         "2026-12-01T00:00:00+00:00")
    assert "ratio_vs_quix 22.50× (20.40–24.20)" in text
    assert "stream_ratio_vs_quix MISSED" in text and "stream_readings_per_s met" in text
    assert "| `warehouse` | skipped: its peer chDB is not installed |" in text
    assert "### stream" in text and "### warehouse" not in text


def test_bench_names_and_bad_markers_are_refused_in_one_line_before_anything_runs(tmp_path):
    res = gigapulse("bench", "all", "--only", "ingest,nope", cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "unknown bench nope" in res.stderr, res.stderr
    doc = tmp_path / "doc.md"
    doc.write_text(HEAD + suite.END + suite.BEGIN)
    res = gigapulse("bench", "all", "--only", "ingest", "--out", str(doc), cwd=tmp_path, timeout=60)
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "markers" in res.stderr, res.stderr
    assert "[1/1]" not in res.stderr  # refused before the hours of benches, not after


def test_the_projects_benchmarks_document_has_the_markers_once():
    doc = (REPO / "docs" / "BENCHMARKS.md").read_text()
    assert suite.rewrite(doc, f"{suite.BEGIN}\nx\n{suite.END}").count("\nx\n") == 1


def test_every_bench_can_be_called_with_its_defaults_and_quick_sizes():
    """``bench all`` calls the command functions directly, past typer: every quick option must be one of the
    function's parameters, and every default a plain value (not a typer.Option object)."""
    import inspect

    import typer

    from gigapulse.cli import benchmarks

    for bench in suite.BENCHES:
        params = inspect.signature(getattr(benchmarks, bench.function)).parameters
        assert set(bench.quick) <= set(params) and "out" in params, (bench.name, set(bench.quick) - set(params))
        for name, p in params.items():
            assert p.default is not inspect.Parameter.empty, (bench.name, name)
            assert not isinstance(p.default, typer.models.ParameterInfo), (bench.name, name)
