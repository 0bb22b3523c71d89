"""The "Files each command writes" table (``docs/outputs.md``) against what each command writes.

The table is parsed from docs/outputs.md (``{png,svg}`` expanded, ``NNNNNNN`` a step number, ``*`` a
file written only under the condition the table states), each command is run on the tiny model
or a tiny training run, and the set of files written must equal the documented set.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from _training_helpers import tiny_trigger_args

from circuits.cli import main

README = Path(__file__).resolve().parents[2] / "docs" / "outputs.md"  # moved from README.md


def _names(cell: str) -> tuple[set[str], set[str]]:
    always: set[str] = set()
    optional: set[str] = set()
    for name, star in re.findall(r"`([^`]+)`(\\\*)?", cell):
        if name.startswith(("--", ".")):  # a flag, or the ".sha256" sidecar suffix
            continue
        target = optional if star else always
        m = re.fullmatch(r"(.*)\{(.*)\}", name)
        target.update(m.group(1) + ext for ext in m.group(2).split(",")) if m else target.add(name)
    return always, optional


def documented() -> dict[str, tuple[set[str], set[str], dict[str, set[str]]]]:
    """Per table row (its command cell): (files always written, files written conditionally,
    files a flag adds: "...; with `--flag` also `file`")."""
    text = README.read_text(encoding="utf-8").split("<!-- files-table -->", 1)[1]
    rows: dict[str, tuple[set[str], set[str], dict[str, set[str]]]] = {}
    lines = text.strip().splitlines()
    assert lines[0].startswith("| command") and lines[1].startswith("|---")
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        command, files = (c.strip() for c in line.strip("|").split("|"))
        parts = re.split(r"with `(--[\w-]+)` also", files)
        always, optional = _names(parts[0])
        by_flag = {
            flag: _names(cell)[0] for flag, cell in zip(parts[1::2], parts[2::2], strict=True)
        }
        rows[command] = (always, optional, by_flag)
    return rows


def written(folder: Path) -> set[str]:
    """Files under ``folder`` (relative, step numbers as NNNNNNN)."""
    return {
        re.sub(r"_\d{7}\.", "_NNNNNNN.", p.relative_to(folder).as_posix())
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def table():
    return documented()


def _row(table, prefix: str) -> tuple[set[str], set[str]]:
    (key,) = [k for k in table if k.startswith(f"`{prefix}")]
    return table[key][:2]


def _flag(table, prefix: str, flag: str) -> set[str]:
    (key,) = [k for k in table if k.startswith(f"`{prefix}")]
    return table[key][2][flag]


def test_the_table_lists_every_command(table):
    commands = {re.match(r"`(\w+)", k).group(1) for k in table}
    assert commands == {"measure", "discover", "accounts", "render", "train", "trace", "sweep"}


def test_measure_writes_what_readme_lists(table, tmp_path):
    out = tmp_path / "m"
    assert (
        main(["measure", "--model", "tiny", "--max-tokens", "24", "--out", str(out), "--quiet"])
        == 0
    )
    always, optional = _row(table, "measure")
    assert optional == set() and written(out) == always


def test_discover_and_render_write_what_readme_lists(table, tmp_path):
    out = tmp_path / "d"
    args = ["--n-prompts", "2", "--n-tokens", "12", "--quiet"]
    assert main(["discover", "--model", "tiny", "--out", str(out), *args]) == 0
    always, optional = _row(table, "discover")
    assert optional == {"paths_k.png", "paths_k.svg", "prediction.png", "prediction.svg"}
    record = json.loads((out / "patching.json").read_text())
    present = (set() if not record.get("paths_k") else {"paths_k.png", "paths_k.svg"}) | (
        set() if not record.get("prediction") else {"prediction.png", "prediction.svg"}
    )
    assert written(out) == always | present
    # render rewrites the same files; with --views it (re)computes views.json and nothing else
    before = written(out)
    (out / "views.json").unlink()
    assert main(["render", str(out), "--quiet"]) == 0
    assert written(out) == before - {"views.json"}
    assert main(["render", str(out), "--views", "--quiet"]) == 0
    assert written(out) == before


def test_render_of_measure_runs_writes_what_readme_lists(table, tmp_path):
    runs = tmp_path / "runs"
    for flag in ("--bos", "--no-bos"):
        out = runs / flag.strip("-")
        assert (
            main(
                [
                    "measure",
                    "--model",
                    "tiny",
                    "--max-tokens",
                    "16",
                    flag,
                    "--out",
                    str(out),
                    "--quiet",
                ]
            )
            == 0
        )
    inner = {d.name: written(d) for d in runs.iterdir()}
    assert main(["render", str(runs), "--quiet"]) == 0
    always, _ = _row(table, "render RUNS")
    top = {f for f in written(runs) if "/" not in f}
    assert top == always
    assert {d.name: written(d) for d in runs.iterdir() if d.is_dir()} == inner


def test_train_and_trace_write_what_readme_lists(table, tmp_path):
    run = tmp_path / "run"
    flags = tiny_trigger_args(steps=12, checkpoints=3, save_every=4)
    assert main(["train", *flags, "--out", str(run), "--quiet"]) == 0
    always, _ = _row(table, "train")
    # "each with a .sha256 sidecar"
    expected = always | {f + ".sha256" for f in always}
    assert written(run) == expected
    assert len(list((run / "state").glob("state_*.pt"))) == 2  # "the last 2"
    assert len(list((run / "checkpoints").glob("step_*.pt"))) >= 3
    trace_out = tmp_path / "trace"
    shutil.copytree(run, trace_out)
    assert main(["trace", str(trace_out), "--batch-size", "4", "--quiet"]) == 0
    trace_files, _ = _row(table, "trace")
    assert written(trace_out) - written(run) == trace_files
    assert main(["trace", str(trace_out), "--batch-size", "4", "--circuit", "--quiet"]) == 0
    with_circuit = _flag(table, "trace", "--circuit")
    assert written(trace_out) - written(run) == trace_files | with_circuit
    assert _flag(table, "render DIR", "--views") == {"views.json"}


def test_accounts_writes_what_readme_lists(table, tmp_path):
    run = tmp_path / "run3"
    flags = tiny_trigger_args(steps=4, checkpoints=1, save_every=4)
    flags[flags.index("--layers") + 1] = "3"  # the accounts need receivers after blocks 0-1
    assert main(["train", *flags, "--out", str(run), "--quiet"]) == 0
    step = sorted((run / "checkpoints").glob("step_*.pt"))[-1].stem.split("_")[1]
    out = tmp_path / "acc"
    ids = tmp_path / "ids.txt"  # a synthetic task's text is token ids, one prompt per line
    ids.write_text("\n".join(" ".join(str((7 * i + 3 * j) % 12 + 1) for j in range(16))
                             for i in range(4)) + "\n")  # fmt: skip
    args = ["--n-prompts", "2", "--n-tokens", "12", "--text", str(ids), "--quiet"]
    assert main(["accounts", "--model", f"{run}@{int(step)}", "--out", str(out), *args]) == 0
    always, optional = _row(table, "accounts")
    assert optional == set() and written(out) == always
