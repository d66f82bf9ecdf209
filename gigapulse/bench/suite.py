"""``gigapulse bench all``: every bench with its peers, one after the other, then the figures section of
docs/BENCHMARKS.md rewritten from what was just measured.

Each bench runs through its own command function (:mod:`gigapulse.cli.benchmarks`) with the same
defaults as ``make bench``, so ``bench all`` measures exactly what the single commands measure; each
writes its JSON report (the structured result), which is read back into a :class:`BenchResult`. A bench
that fails is recorded as failed, with its one-line reason, and the rest still run: a night's run is
not lost to one broken bench. A peer that is not installed (the optional ``.[bench]`` extra) is
left out with a note; where the bench cannot run without it (the stream bench's ratio is to Quix
Streams), the bench is skipped with that note.

Only the text between :data:`BEGIN` and :data:`END` is replaced; the prose around it is kept byte for
byte. A file without the markers gets the section appended at its end.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gigapulse.bench.report import BenchResult, environment, markdown_table

BEGIN = "<!-- bench-all:begin -->"
END = "<!-- bench-all:end -->"
BENCH_EXTRA = "pip install -e '.[bench]'"


@dataclass(frozen=True)
class Bench:
    """One bench as ``bench all`` runs it."""

    name: str
    command: str  # the single command, for the figures section
    function: str  # its function in gigapulse.cli.benchmarks
    #: the smallest sizes each option allows or that still measure something (--quick: a smoke test)
    quick: dict[str, Any] = field(default_factory=dict)
    #: peers: (module to import, name shown); if ``required``, the bench cannot run without them
    peers: tuple[tuple[str, str], ...] = ()
    peers_required: bool = False


#: In the order of ``make bench`` (the Makefile's bench target), with its defaults.
BENCHES: tuple[Bench, ...] = (
    Bench("ingest", "gigapulse bench ingest", "bench_ingest",
          {"runs": 1, "frames_duration": "30s", "json_duration": "10s", "memory_durations": "30s"}),
    Bench("stream", "gigapulse bench stream", "bench_stream",
          {"runs": 1, "prefill": "1m", "quix_readings": 100_000, "compact_every": "off"},
          peers=(("quixstreams", "Quix Streams"),), peers_required=True),
    Bench("freshness", "gigapulse bench freshness", "bench_freshness",
          {"runs": 1, "rate": 2_000, "duration": "10s", "compact_every": "off"}),
    Bench("recovery", "gigapulse bench recovery", "bench_recovery", {"runs": 1, "rate": 2_000, "timeout": 60.0}),
    Bench("warehouse", "gigapulse bench warehouse", "bench_warehouse",
          {"readings": 10_000, "runs": 1, "workers": 1},
          peers=(("chdb", "chDB"), ("polars", "Polars"))),
    Bench("bridges-modbus", "gigapulse bench bridges modbus", "bench_bridges_modbus",
          {"runs": 1, "blocks": 10, "duration": "3s", "endpoints": 1, "peer_seconds": 1.0}),
    Bench("bridges-opcua", "gigapulse bench bridges opcua", "bench_bridges_opcua",
          {"runs": 1, "nodes": 20, "duration": "5s"}),
    Bench("bridges-mqtt", "gigapulse bench bridges mqtt", "bench_bridges_mqtt", {"runs": 1, "sim": "10s"}),
    Bench("quality", "gigapulse bench quality", "bench_quality", {"hours": 0.5, "plants": "reference", "workers": 1}),
    Bench("scoring", "gigapulse bench scoring", "bench_scoring", {"minutes": 6.0, "model_hours": 0.5}),
)
NAMES = tuple(b.name for b in BENCHES)
#: Versions the figures section names, beyond the benches' own list (their peers included).
VERSIONS = ("kafka-python", "aiokafka", "faust-streaming", "dagster", "duckdb", "pyarrow", "numpy", "polars", "chdb",
            "quixstreams", "confluent-kafka", "pymodbus", "asyncua", "paho-mqtt", "scikit-learn")


def select(only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[Bench]:
    """The benches to run, in their order; an unknown name is a ValueError naming the known ones."""
    only, skip = [n for n in only if n], [n for n in skip if n]
    unknown = sorted((set(only) | set(skip)) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown bench {', '.join(unknown)} (choose from {', '.join(NAMES)})")
    return [b for b in BENCHES if (not only or b.name in only) and b.name not in skip]


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def run_one(bench: Bench, quick: bool, json_dir: Path) -> BenchResult:
    """Run one bench through its command function; its JSON report becomes the result."""
    from gigapulse.cli import benchmarks

    missing = [shown for module, shown in bench.peers if _missing(module)]
    if missing and bench.peers_required:
        return BenchResult(bench.name, "skipped", f"its peer {', '.join(missing)} is not installed ({BENCH_EXTRA})")
    kwargs = dict(bench.quick) if quick else {}
    notes = [f"peer {m} not installed ({BENCH_EXTRA}): left out" for m in missing]
    if bench.name == "warehouse" and missing:
        kwargs["engines"] = ",".join(e for e in ("gigapulse", "chDB", "Polars", "naive DuckDB") if e not in missing)
    out = json_dir / f"{bench.name}.json"
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    shown = io.StringIO()
    try:
        with contextlib.redirect_stdout(shown):  # the bench's own markdown: kept in the result, not printed twice
            getattr(benchmarks, bench.function)(**kwargs, out=out)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - one bench's failure is its result; the others still run
        reason = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
        return BenchResult(bench.name, "failed", "; ".join([*notes, f"{type(exc).__name__}: {reason}"]),
                           time.monotonic() - t0)
    report = json.loads(out.read_text())
    report.setdefault("table", "")
    return BenchResult(bench.name, "ok", "; ".join(notes), time.monotonic() - t0, report)


def run_all(benches: list[Bench], quick: bool, json_dir: Path,
            on_start: Callable[[Bench, int], None] | None = None,
            on_done: Callable[[BenchResult], None] | None = None) -> list[BenchResult]:
    json_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, bench in enumerate(benches):
        if on_start:
            on_start(bench, i)
        result = run_one(bench, quick, json_dir)
        results.append(result)
        if on_done:
            on_done(result)
    return results


# --------------------------------------------------------------------------- the figures section

def _spreads(node: Any, path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], dict]]:
    """Every ``median/min/max`` figure of a report, with where it sits."""
    if isinstance(node, dict):
        if {"median", "min", "max"} <= node.keys():
            yield path, node
            return
        for k, v in node.items():
            if k not in ("environment", "params", "options", "runs", "memory_runs"):
                yield from _spreads(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _spreads(v, (*path, str(i)))


def _num(v: Any) -> str:
    if not isinstance(v, int | float):
        return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3g}"


def ratios(report: dict[str, Any]) -> list[str]:
    """The ratios to a peer a report holds, as ``name median× (min–max)``. A bench with one ratio per
    query and peer (the warehouse) gets one line per peer: the range of its per-query medians."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for path, s in _spreads(report):
        parts = [p for p in path if p not in ("results", "figures", "summary")]
        if not any("ratio" in p for p in parts):
            continue
        key = parts[-2] if parts[-1] == "ratio" and len(parts) >= 2 else ".".join(parts)
        groups.setdefault(key, []).append((".".join(parts), s))
    out = []
    for key, figures in groups.items():
        if len(figures) == 1:
            s = figures[0][1]
            out.append(f"{key} {_num(s['median'])}× ({_num(s['min'])}–{_num(s['max'])})")
        else:
            medians = sorted(s["median"] for _, s in figures)
            out.append(f"{key} {_num(medians[0])}–{_num(medians[-1])}× (medians of {len(figures)} figures)")
    return out


def _met(report: dict[str, Any]) -> str:
    met = report.get("met")
    if isinstance(met, bool):
        return "met" if met else "MISSED"
    if isinstance(met, dict) and met:
        flat = {k: v for k, v in met.items() if isinstance(v, bool)}
        nested = {k: v for k, v in met.items() if isinstance(v, dict)}
        for k, v in nested.items():
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items() if isinstance(vv, bool)})
        return ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in flat.items()) or "–"
    targets = report.get("targets")
    if isinstance(targets, dict):
        mets = [f"{k} {'met' if v.get('met') else 'MISSED'}" for k, v in targets.items()
                if isinstance(v, dict) and "met" in v]
        return ", ".join(mets) or "–"
    return "–"


def _versions() -> str:
    found = []
    for name in VERSIONS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def section(results: list[BenchResult], quick: bool, started: str, env: dict[str, Any] | None = None) -> str:
    """The markdown between the markers: machine, versions, a summary row per bench, then each bench's table."""
    env = env or environment()
    m = env["machine"]
    lines = [BEGIN, "",
             "<!-- written by `gigapulse bench all`; edit the prose outside these markers, not inside -->", ""]
    if quick:
        lines += ["**Quick run (`--quick`, the smallest sizes): a smoke test of the machinery, not figures to "
                  "quote.**", ""]
    wall = sum(r.wall_s for r in results)
    lines += [
        f"Run started {started}, {wall / 60:,.1f} minutes of benches.", "",
        markdown_table(["", ""], [
            ["machine", f"{m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
                        f"{m['memory_gib']} GiB RAM, load {'/'.join(str(x) for x in m['load_average_at_start'])} "
                        "at start"],
            ["OS", m["os"]],
            ["Python", env["python"]],
            ["Kafka", f"{env['kafka']} ({env.get('java') or 'java not found'})"],
            ["libraries and peers", _versions()],
        ]), "",
        markdown_table(["bench", "status", "minutes", "ratio to its peer, median (min–max)", "targets"], [
            [f"`{r.name}`", r.status + (f": {r.note}" if r.note else ""), f"{r.wall_s / 60:.1f}",
             "; ".join(ratios(r.report)) or "–" if r.report else "–", _met(r.report) if r.report else "–"]
            for r in results]),
        "",
    ]
    by_name = {b.name: b for b in BENCHES}
    for r in results:
        if not r.report:
            continue
        lines += [f"### {r.name}", "",
                  f"`{by_name[r.name].command}`" + (" (quick sizes)" if quick else " (defaults)")
                  + f", {r.wall_s / 60:.1f} minutes; medians with their min–max over the runs.", "",
                  r.report["table"].strip(), ""]
    lines.append(END)
    return "\n".join(lines)


def rewrite(doc: str, new_section: str) -> str:
    """``doc`` with the text between the markers (markers included) replaced by ``new_section``; appended
    when the markers are missing. Markers out of order or doubled are refused: guessing could eat prose."""
    begins, ends = doc.count(BEGIN), doc.count(END)
    if begins == ends == 0:
        return doc.rstrip("\n") + "\n\n" + new_section + "\n"
    if begins != 1 or ends != 1 or doc.index(BEGIN) > doc.index(END):
        raise ValueError(f"the markers {BEGIN} and {END} must appear once each, in that order")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + new_section + tail
