"""The CLI mirrors the API and reports bad input in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emae.cli import build_parser, main


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the registered sub-commands
    assert {"sample-data", "demo", "pipeline", "report"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: emae" in capsys.readouterr().out


def test_sample_data_command(tmp_path, capsys):
    assert main(["-q", "sample-data", str(tmp_path / "d"), "--tiny", "--seed", "4"]) == 0
    assert "labels" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 4


def test_existing_output_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["sample-data", str(out), "--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emae: error:") and "already exists" in err[0]


def test_invalid_option_is_one_error_line(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "d"), "--seed", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed" in err[0] and "Traceback" not in err[0]


@pytest.mark.slow
def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "emae", "-q", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "gallery.png").stat().st_size > 10_000
    record = json.loads((out / "pipeline.json").read_text())
    assert "report" in record["steps"] and (out / "report.html").is_file()
    assert str(out / "report.html") in proc.stdout


def test_file_system_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from emae.synth import sample_data

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "d/volume.tif"))

    monkeypatch.setattr(sample_data, "write_sample_data", full_disk)
    assert main(["sample-data", str(tmp_path / "d"), "--tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"emae: error: {tmp_path / 'd/volume.tif'}: No space left on device"]
