"""params.yaml, fuzzed: 240 seeded mutations of the shipped file (wrong types, unknown keys, out-of-range values,
missing keys and sections, YAML syntax errors). Each either validates (the run goes on) or stops with one
``XaiCoreError`` line naming the key (or, for broken YAML, the line); never another exception.

What the command line does with such an error (one line on stderr, exit status 2, no output folder) is tested
in tests/flows/test_cli.py; here the configuration is loaded as that command loads it (``load_config`` and
``preflight``), which is where every one of these is decided.
"""

from __future__ import annotations

import collections
import copy
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from xaicore.config import load_config
from xaicore.errors import XaiCoreError
from xaicore.pipeline import preflight

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
N_PER_KIND = 48
KINDS = ("wrong_type", "unknown_key", "out_of_range", "missing", "yaml_syntax")
WRONG = ["abc", [1, 2], {"a": 1}, True, 0.5, -3, None, "", [], 10**12]
OUT_OF_RANGE = [-1, 0, -0.5, 1e9, math.inf, math.nan, 10**15, -(10**9)]


def leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.extend(leaves(v, key + ".") if isinstance(v, dict) and k != "method_params" and k != "batch_sizes"
                   else [key])
    return out


def put(d: dict, key: str, value: Any) -> None:
    *head, last = key.split(".")
    for k in head:
        d = d[k]
    d[last] = value


def drop(d: dict, key: str) -> None:
    *head, last = key.split(".")
    for k in head:
        d = d[k]
    del d[last]


def mutation(kind: str, i: int) -> tuple[str, str, str]:
    """(yaml text, the key (or ``line N``) an error must name, a description)."""
    rng = random.Random(f"{kind}-{i}")
    raw = copy.deepcopy(BASE)
    keys = leaves(raw)
    if kind == "yaml_syntax":  # each breaker makes a `key: value` line invalid YAML
        lines = yaml.safe_dump(raw, sort_keys=False).splitlines()
        n = rng.choice([j for j, line in enumerate(lines) if re.match(r"^\s*[\w.]+: \S", line)])
        broken = rng.choice([lambda s: s.replace(": ", ": [", 1),  # an unclosed flow sequence
                             lambda s: s.replace(": ", ': "', 1),  # an unclosed quote
                             lambda s: s + ": x",  # a mapping inside a plain value
                             lambda s: "\t" + s.lstrip()])  # a tab as indentation
        lines[n] = broken(lines[n])
        return "\n".join(lines) + "\n", "line", f"line {n + 1} broken: {lines[n]!r}"
    key = rng.choice(keys)
    if kind == "wrong_type":
        value = rng.choice(WRONG)
        put(raw, key, value)
        return yaml.safe_dump(raw), key, f"{key} = {value!r}"
    if kind == "out_of_range":
        value = rng.choice(OUT_OF_RANGE)
        put(raw, key, value)
        return yaml.safe_dump(raw), key, f"{key} = {value!r}"
    if kind == "unknown_key":
        section = key.rsplit(".", 1)[0] if "." in key else ""
        new = f"{section + '.' if section else ''}{rng.choice(['epochz', 'worker', 'method', 'regoin', 'lr_'])}"
        put(raw, new, 1)
        return yaml.safe_dump(raw), new, f"{new} added"
    if rng.random() < 0.3:
        key = key.split(".")[0]  # a whole section
    drop(raw, key)
    return yaml.safe_dump(raw), key, f"{key} removed"


CASES = [(kind, i) for kind in KINDS for i in range(N_PER_KIND)]
OUTCOMES: collections.Counter = collections.Counter()
ACCEPTED: list[str] = []


def outcome(text: str, tmp_path: Path) -> str | None:
    """None when the configuration validates; else the error's message."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    try:
        preflight(load_config(path))
    except XaiCoreError as e:
        return str(e)
    return None


@pytest.mark.parametrize("kind, i", CASES, ids=[f"{k}-{i}" for k, i in CASES])
def test_a_mutated_params_file_runs_or_stops_naming_the_key(kind, i, tmp_path):
    text, key, what = mutation(kind, i)
    message = outcome(text, tmp_path)
    OUTCOMES[(kind, "refused" if message is not None else "accepted")] += 1
    if message is None:
        assert kind in ("out_of_range", "missing", "wrong_type"), f"{what}: accepted"
        ACCEPTED.append(what)
        return
    assert "\n" not in message, f"{what}: {message}"
    if kind == "yaml_syntax":
        assert re.search(r"is not valid YAML at line \d+, column \d+: ", message), f"{what}: {message}"
    else:
        assert key in message, f"{what}: {message!r} does not name {key}"


def test_refusals_are_the_rule_for_what_must_be_refused():
    """Run after the cases (same module, collected last): unknown keys and broken YAML are always refused, and
    most wrong types and out-of-range values are; the counts are printed for the record."""
    if sum(OUTCOMES.values()) < len(CASES):
        pytest.skip("run with the parametrized cases (the whole module)")
    print("\nfuzzed params.yaml outcomes:", dict(sorted(OUTCOMES.items())))
    print("accepted:", "; ".join(a for a in ACCEPTED if not a.endswith("removed")))
    assert OUTCOMES[("unknown_key", "refused")] == N_PER_KIND
    assert OUTCOMES[("yaml_syntax", "refused")] == N_PER_KIND
    assert OUTCOMES[("wrong_type", "refused")] >= 0.7 * N_PER_KIND
    assert OUTCOMES[("out_of_range", "refused")] >= 0.6 * N_PER_KIND
