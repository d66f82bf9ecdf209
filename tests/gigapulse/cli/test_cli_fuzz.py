"""Fuzzing the command line: generated argument lists for every command that fails fast.

Property-based (hypothesis): for each command below, a random subset of its own options (and
sometimes unknown ones, or stray words) gets values drawn from a pool of bad input: wrong types,
negative and huge numbers, NaN and infinities, empty strings, odd unicode, NUL bytes, very long
words, bad durations and dates, paths that do not exist, are folders, are files where a folder is
expected, or are too long for the filesystem. ``gigapulse.cli.main`` (the console-script entry
point, with its error handling) runs each list in-process.

The property: no traceback ever, and a refusal is one line on stderr, ``gigapulse: error: ...``,
with a non-zero exit, classified as the user's mistake (not the catch-all "TypeError: ... (GIGAPULSE_DEBUG=1
shows the traceback)" that marks a bug). A list that happens to be valid may succeed (exit 0).

Nothing here may start long-running work: Kafka is a dead address (port 9, 1 s connect timeout), the
data directory is an empty temporary one, and the options that would serve or loop (``simulate
--serve``, ``lake compact --loop``) and the commands that start brokers, bridges on a valid config,
benchmarks, the demo and Dagster are left out (the last two are covered by their own tests).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections import Counter

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gigapulse.cli import app, main

DEAD = "127.0.0.1:9"
#: Examples per command and run: sized for about a minute on a busy 2-core machine.
EXAMPLES = int(os.environ.get("GIGAPULSE_FUZZ_EXAMPLES", "6"))

#: Command paths fuzzed, each with the options left out (they would start long-running work).
COMMANDS: dict[tuple[str, ...], frozenset[str]] = {
    ("simulate",): frozenset({"--serve"}),
    ("replay",): frozenset(),
    ("sql",): frozenset(),
    ("report",): frozenset(),
    ("health",): frozenset(),
    ("score",): frozenset(),
    ("stream",): frozenset(),
    ("warehouse",): frozenset(),
    ("topics", "apply"): frozenset(),
    ("topics", "list"): frozenset(),
    ("schemas", "export"): frozenset(),
    ("broker", "status"): frozenset(),
    ("broker", "stop"): frozenset(),
    ("bridge", "config"): frozenset(),
    ("bridge", "health"): frozenset(),
    ("bridge", "modbus"): frozenset(),
    ("bridge", "mqtt"): frozenset(),
    ("bridge", "opcua"): frozenset(),
    ("lake", "status"): frozenset(),
    ("lake", "expire"): frozenset(),
    ("lake", "compact"): frozenset({"--loop"}),
    ("lake", "rollup"): frozenset(),
    ("models", "list"): frozenset(),
    ("models", "promote"): frozenset(),
}

NUMBERS = ["0", "-1", "-0", "1", "3", "2147483648", "-9223372036854775809", "1" + "0" * 400, "1e309", "-1e309",
           "nan", "NaN", "inf", "-inf", "0x10", "1_000", "1.5", "٣", "１２"]
WORDS = ["", " ", "-", "--", "---", "=", "'", "\"", ";", "\\", "%s", "{}", "null", "None", "true", "é", "☃",
         "\u200b", "\u202e", "\U0001f600", "a\x00b", "\x00", "\t\n", "x" * 5000, "reference", "legacy", "ref",
         "sparkplug", "json", "frames", "max", "realtime", "now", "readings", "events"]
DURATIONS = ["10s", "0s", "-5s", "1x", "s", "1e400s", "99999999999999999999d", "1.5m", "nan s", "10 s", "1h30m",
             "2026-01-05", "2026-13-45", "2026-01-05T06:00:00", "2026-01-05T06:00:00Z", "yesterday"]
UNKNOWN = ["--no-such-option", "-x", "--bootstrap=", "--help-me", "--=", "-"]


def _commands(group, path=()) -> dict[tuple[str, ...], object]:
    found = {}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            found.update(_commands(cmd, (*path, name)))
        else:
            found[(*path, name)] = cmd
    return found


TREE = _commands(typer.main.get_command(app))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Paths of every awkward kind, made once."""
    root = tmp_path_factory.mktemp("fuzz-paths")
    (root / "folder").mkdir()
    (root / "empty.csv").write_bytes(b"")
    (root / "junk.yaml").write_bytes(os.urandom(512))
    (root / "latin1.csv").write_bytes("sensor_id,ts,value\ncapteur-é,x,1\n".encode("latin-1"))
    (root / "nul.parquet").write_bytes(b"PAR1\x00\x00\x00PAR1")
    (root / "plain.txt").write_text("not a folder\n")
    return {
        "folder": str(root / "folder"), "missing": str(root / "missing" / "file.csv"),
        "empty": str(root / "empty.csv"), "junk": str(root / "junk.yaml"), "latin1": str(root / "latin1.csv"),
        "nul": str(root / "nul.parquet"), "under_a_file": str(root / "plain.txt" / "child.csv"),
        "too_long": str(root / ("n" * 300)), "deep_too_long": str(root / "/".join(["d" * 200] * 30)),
        "nul_in_name": str(root / "a\x00b.csv"), "dev_null": "/dev/null", "proc": "/proc/self/no-such",
    }


def values(paths: dict[str, str]) -> st.SearchStrategy[str]:
    odd_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # no lone surrogates: see docs
    return st.one_of(st.sampled_from(NUMBERS), st.sampled_from(WORDS), st.sampled_from(DURATIONS),
                     st.sampled_from(sorted(paths.values())), st.integers().map(str),
                     st.floats(allow_nan=True).map(repr), odd_text)


@st.composite
def argv(draw, path: tuple[str, ...], paths: dict[str, str]) -> list[str]:
    cmd = TREE[path]
    words = list(path)
    if path == ("sql",):  # without a query it opens the interactive shell
        words.append(draw(st.sampled_from(["SELECT 1", "", "SELECT * FROM readings", "\x00", "DROP TABLE x"])))
    params = [p for p in cmd.params if p.opts and p.opts[0].startswith("-") and p.opts[0] not in COMMANDS[path]
              and p.name != "help"]
    vals = values(paths)
    for p in draw(st.lists(st.sampled_from(params), max_size=4)) if params else []:
        opt = draw(st.sampled_from(p.opts))
        if p.is_flag:
            words.append(opt)
        else:
            words += [opt, draw(vals)]
    positional = [p for p in cmd.params if not p.opts[0].startswith("-")] if path != ("sql",) else []
    for _ in positional:  # mostly a bad value, now and then left out
        if draw(st.integers(0, 3)) > 0:
            words.append(draw(vals))
    if draw(st.integers(0, 9)) == 0:
        words.insert(draw(st.integers(len(path), len(words))), draw(st.sampled_from(UNKNOWN)))
    if any(p.name == "bootstrap" for p in cmd.params):
        words += ["--bootstrap", DEAD]  # the last one counts: nothing ever reaches a broker
    return words


TRIED: Counter[str] = Counter()
SECONDS: Counter[str] = Counter()


def run(words: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(words)
        except SystemExit as exc:
            code = exc.code
        else:
            code = 0
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


def check(words: list[str]) -> None:
    t0 = time.monotonic()
    rc, out, err = run(words)
    path = next((p for p in sorted(COMMANDS, key=len, reverse=True) if tuple(words[:len(p)]) == p), words[:1])
    TRIED[" ".join(path)] += 1
    SECONDS[" ".join(path)] += time.monotonic() - t0
    assert "Traceback" not in out + err, (words, err[-2000:])
    if rc == 0:
        return
    if path == ("broker", "status") and rc == 3 and out.startswith("broker "):  # its documented "not running" answer
        return
    if rc == 2 and err.lstrip().startswith("Usage:"):  # a group without its command: its help, as for `git`
        return
    assert err.startswith("gigapulse: error: "), (words, rc, err[-2000:])
    assert err.count("\n") == 1 and err.endswith("\n"), (words, err[-2000:])
    assert "GIGAPULSE_DEBUG=1" not in err, (words, err)  # an unexpected error: a bug, not the user's mistake


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for k in list(os.environ):
            if k.startswith("GIGAPULSE_"):
                mp.delenv(k)
        data = tmp_path_factory.mktemp("fuzz-data")
        mp.setenv("GIGAPULSE_BOOTSTRAP_SERVERS", DEAD)
        mp.setenv("GIGAPULSE_CONNECT_TIMEOUT_S", "1")
        mp.setenv("GIGAPULSE_DATA_DIR", str(data / "data"))
        mp.chdir(data)
        yield data


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_generated_command_lines_never_show_a_traceback(path, files, clean_env):
    # a command without options has little to vary (unknown options, stray words): a few cases do
    examples = EXAMPLES if any(p.name != "help" for p in TREE[path].params) else 2
    @settings(max_examples=examples, suppress_health_check=list(HealthCheck))
    @given(words=argv(path, files))
    def prop(words):
        check(words)

    before = TRIED[" ".join(path)]
    prop()
    tried = TRIED[" ".join(path)] - before
    print(f"\nRELIABILITY | fuzz cli {' '.join(path)} | cases={tried} | {SECONDS[' '.join(path)]:.1f} s")
    assert tried >= examples // 2


@pytest.mark.parametrize("words", [
    ["simulate", "--plant", "{folder}"],
    ["bridge", "config", "--plant", "{folder}"],
    ["simulate", "--plant", "{junk}"],
    ["simulate", "--plant", "{nul_in_name}"],
    ["replay", "{folder}"],
    ["replay", "{nul_in_name}"],
    ["replay", "{too_long}"],
    ["schemas", "export", "--out", "{under_a_file}"],
    ["sql", "SELECT 1", "--output", "{folder}"],
])
def test_the_defects_fuzzing_found_stay_fixed(words, files, clean_env):
    check([w.format(**files) for w in words])


def test_the_fuzzed_commands_exist():
    assert set(COMMANDS) <= set(TREE), set(COMMANDS) - set(TREE)
