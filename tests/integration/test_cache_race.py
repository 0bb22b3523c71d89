"""Two processes loading one model into an empty cache: both succeed, and it is converted once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys


def test_two_processes_share_one_empty_cache(smollm2, tmp_path):
    model = tmp_path / "model.gguf"
    shutil.copy(smollm2.info["gguf"], model)  # a local GGUF: converted into the cache on first use
    env = {**os.environ, "P0_CIRCUITS_CACHE": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "circuits",
                "measure",
                "--model",
                str(model),
                "--max-tokens",
                "16",
                "--out",
                str(tmp_path / f"out{i}"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    converted = sum("dequantizing" in err for _, err in results)
    assert converted == 1, "the model was converted by both processes"
    entries = list((tmp_path / "cache" / "local").glob("*/hooked-*"))
    assert len(entries) == 1 and (entries[0] / "manifest.json").is_file()
    assert not list((tmp_path / "cache").rglob(".hooked-*")), "a temporary folder was left"
    numbers = [
        json.loads((tmp_path / f"out{i}" / "sink_metrics.json").read_text())["layers"]
        for i in range(2)
    ]
    assert numbers[0] == numbers[1]


def test_a_damaged_cache_entry_is_converted_again(smollm2, tmp_path, capsys):
    from circuits.cli import main

    model = tmp_path / "model.gguf"
    shutil.copy(smollm2.info["gguf"], model)
    os.environ["P0_CIRCUITS_CACHE"] = str(tmp_path / "cache")
    try:
        assert (
            main(
                [
                    "measure",
                    "--model",
                    str(model),
                    "--max-tokens",
                    "16",
                    "--out",
                    str(tmp_path / "a"),
                    "--quiet",
                ]
            )
            == 0
        )
        (entry,) = (tmp_path / "cache" / "local").glob("*/hooked-*")
        config = json.loads((entry / "config.json").read_text())
        config["rotary_base"] = 10000.0  # a silent change of the numbers, were it loaded
        (entry / "config.json").write_text(json.dumps(config))
        capsys.readouterr()
        assert (
            main(
                [
                    "measure",
                    "--model",
                    str(model),
                    "--max-tokens",
                    "16",
                    "--out",
                    str(tmp_path / "b"),
                    "--quiet",
                ]
            )
            == 0
        )
        err = capsys.readouterr().err
        assert "config.json changed after it was written" in err and "converting it again" in err
    finally:
        del os.environ["P0_CIRCUITS_CACHE"]
    a, b = (json.loads((tmp_path / d / "sink_metrics.json").read_text())["layers"] for d in "ab")
    assert a == b
    assert json.loads((entry / "config.json").read_text())["rotary_base"] == 100000.0
