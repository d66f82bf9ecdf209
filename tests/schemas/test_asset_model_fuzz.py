"""Fuzzing the plant YAML loader (``schemas.asset_model.load_plant``) and ``--plant`` on the command line.

Property-based (hypothesis). Plant files made from the reference plant with a key removed, a value
anywhere replaced by another type (or by anything YAML can hold), or an unknown key added; documents
that are not mappings; text that is not YAML; billion-laughs documents (aliases nested up to 9 deep,
10 wide); recursive aliases; documents nested thousands deep; Latin-1, UTF-16 and invalid UTF-8 bytes.

The contract: a ``Plant``, or ``AssetModelError`` with a one-line message naming the file, within
seconds; through ``gigapulse simulate --plant FILE`` (Kafka unreachable) exit 1 with one line.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gigapulse.cli import main
from schemas.asset_model import AssetModelError, Plant, load_plant, plant_path

#: Examples per run: sized for about 15 s.
EXAMPLES = int(os.environ.get("GIGAPULSE_FUZZ_EXAMPLES", "80"))
REFERENCE = yaml.safe_load(plant_path("reference").read_text())
TRIED = {"loader": 0, "cli": 0}
_names = itertools.count()

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value in the document (sampled, the reference plant has thousands)."""
    found = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            found += _paths(v, (*path, i))
    return found


PATHS = _paths(REFERENCE)[1:]


@st.composite
def mutated_plants(draw) -> bytes:
    doc = copy.deepcopy(REFERENCE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.sampled_from(["delete", "replace", "unknown"]))
            if op == "delete":
                del parent[path[-1]]
            elif op == "replace":
                parent[path[-1]] = draw(st.one_of(JUNK, st.sampled_from([-1, 0, 10**30, float("nan"), "", [], {}])))
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=10))] = draw(JUNK)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def billion_laughs(depth: int, width: int) -> bytes:
    lines = ["enterprise: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for d in range(1, depth):
        lines.append(f"k{d}: &l{d} [" + ", ".join([f"*l{d - 1}"] * width) + "]")
    lines.append(f"stations: [{', '.join([f'*l{depth - 1}'] * width)}]")
    return "\n".join(lines).encode()


def deep(levels: int, kind: str) -> bytes:
    return ("plant: " + "[" * levels + "]" * levels if kind == "flow" else
            "".join("  " * i + f"k{i}:\n" for i in range(levels)) + "  " * levels + "x: 1").encode()


ODD = st.one_of(
    st.builds(billion_laughs, st.integers(2, 9), st.integers(2, 10)),
    st.builds(deep, st.sampled_from([100, 1500]), st.just("block")),
    st.builds(deep, st.sampled_from([100, 2000, 50_000]), st.just("flow")),
    st.sampled_from([b"", b"---", b"~", b"42", b"- a\n- b", b"'just text'", b"a: &x [*x]", b"a: &x {b: *x}",
                     b"plant: [", b"\t: x", b"{{{", b"!!python/object:os.system {}", b"a: !!binary AAAA",
                     b"plant: caf\xe9", b"\xff\xfep\x00l\x00a\x00n\x00t\x00", b"\xef\xbb\xbfplant: x", b"\x00\x01",
                     b"--- a\n--- b\n", b"? [a, b]\n: c\n", b"a: 1\na: 2\n", b"<<: *undefined"]),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
PLANT_FILES = st.one_of(mutated_plants(), ODD)


def _write(folder: Path, data: bytes) -> Path:
    path = folder / f"plant{next(_names)}.yaml"
    path.write_bytes(data)
    return path


SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture]


def test_generated_plant_files_load_or_are_refused_in_one_line(tmp_path):
    @settings(max_examples=EXAMPLES, suppress_health_check=SLOW)
    @given(PLANT_FILES)
    def prop(data):
        TRIED["loader"] += 1
        path = _write(tmp_path, data)
        t0 = time.monotonic()
        try:
            plant = load_plant(str(path))
        except AssetModelError as exc:
            assert str(exc) and "\n" not in str(exc) and str(path) in str(exc), str(exc)
        else:
            assert isinstance(plant, Plant) and plant.sensors
        assert time.monotonic() - t0 < 20  # a billion laughs is refused, not expanded

    prop()
    print(f"\nRELIABILITY | fuzz plant yaml loader | cases={TRIED['loader']}")


def test_simulate_with_a_generated_plant_file_is_one_line(tmp_path, monkeypatch):
    for k in list(os.environ):
        if k.startswith("GIGAPULSE_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("GIGAPULSE_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("GIGAPULSE_DATA_DIR", str(tmp_path / "data"))

    @settings(max_examples=EXAMPLES // 3, suppress_health_check=SLOW)
    @given(PLANT_FILES)
    def prop(data):
        TRIED["cli"] += 1
        path = _write(tmp_path, data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
            main(["simulate", "--plant", str(path), "--duration", "1s", "--bootstrap", "127.0.0.1:9"])
        err = err.getvalue()
        assert "Traceback" not in err + out.getvalue(), err
        assert exc.value.code == 1 and err.startswith("gigapulse: error: ") and err.count("\n") == 1, err
        assert "GIGAPULSE_DEBUG=1" not in err, err  # the catch-all for unexpected errors: a bug

    prop()
    print(f"\nRELIABILITY | fuzz plant yaml via simulate --plant | cases={TRIED['cli']}")
