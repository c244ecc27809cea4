"""The CLI mirrors the API and reports bad input in one line."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import tifffile

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
    assert main(["sample-data", str(out), "--tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emae: error:") and "already exists" in err[0]


def test_invalid_option_is_one_error_line(tmp_path, capsys):
    assert main(["sample-data", str(tmp_path / "d"), "--seed", "-3"]) == 1
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
    assert main(["sample-data", str(tmp_path / "d"), "--tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"emae: error: {tmp_path / 'd/volume.tif'}: No space left on device"]


def _commands(parser):
    return parser._subparsers._group_actions[0].choices  # the registered sub-commands


@pytest.mark.parametrize(
    ("argv", "quiet", "verbose"),
    [
        (["info", "x.tif"], False, False),
        (["-q", "info", "x.tif"], True, False),
        (["info", "x.tif", "-q"], True, False),
        (["info", "--verbose", "x.tif"], False, True),
        (["-q", "info", "x.tif", "-v"], True, True),  # the sub-command does not reset -q
        (["-v", "info", "x.tif", "--quiet"], True, True),
    ],
)
def test_logging_flags_work_before_and_after_the_command(argv, quiet, verbose):
    args = build_parser().parse_args(argv)
    assert (args.quiet, args.verbose) == (quiet, verbose)


def test_every_command_takes_the_logging_flags():
    for name, command in _commands(build_parser()).items():
        assert {"-q", "--quiet", "-v", "--verbose"} <= set(command._option_string_actions), name


@contextmanager
def unconfigured_logging():
    """Logging as in a new process (no handlers, so ``main`` configures it), restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("emae").setLevel(logging.NOTSET)


THIRD_PARTY = ("numcodecs", "zarr", "asyncio", "fsspec", "PIL", "matplotlib", "urllib3")


@pytest.mark.parametrize(
    ("flags", "emae_level", "others"),
    [
        ([], logging.INFO, logging.INFO),
        (["-v"], logging.DEBUG, logging.INFO),
        (["-q"], logging.WARNING, logging.WARNING),
    ],
)
def test_verbose_is_debug_for_emae_only(tmp_path, capsys, flags, emae_level, others):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.uint8))
    with unconfigured_logging():
        assert main(["info", str(image), *flags]) == 0
        assert logging.getLogger("emae.io.readers").getEffectiveLevel() == emae_level
        for name in (*THIRD_PARTY, "distributed"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        for name in THIRD_PARTY:
            assert logging.getLogger(name).getEffectiveLevel() == others, name
        logging.getLogger("emae.cli").debug("emae detail")
        logging.getLogger("numcodecs.blosc").debug("codec detail")
    err = capsys.readouterr().err
    assert ("emae detail" in err) == (flags == ["-v"]) and "codec detail" not in err


def test_usage_errors_exit_2_and_failures_exit_1(tmp_path, capsys):
    for argv in (
        ["no-such-command"],
        ["score", "run", "x.tif", "--out", "m.tif", "--tile", "big"],
        ["pretrain", "--out", str(tmp_path / "runs" / "ae")],  # no DATA
        ["detect", "run", "x.tif", "--out", "m.zarr", "--bogus"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        assert "usage: emae" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing is created for a command line in error
    config = tmp_path / "bad.yaml"
    config.write_text("steps: 10\nbogus: 1\n")
    argv = ["pretrain", "x.tif", "--out", str(tmp_path / "ae"), "--config", str(config)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(config) in err[0] and "bogus" in err[0]


def test_help_shows_every_default_once(capsys):
    for name, command in _commands(build_parser()).items():
        for action in command._actions:
            says_nothing = action.default is None or action.default is False
            if action.nargs != 0 and not says_nothing and action.default != argparse.SUPPRESS:
                # argparse prints this default: the help text must not repeat it
                assert "default" not in (action.help or ""), (name, action.dest)
        with pytest.raises(SystemExit):
            main([name, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for noise in ("(default: None)", "(default: False)", "(default: True)", "==SUPPRESS=="):
            assert noise not in out, (name, noise)
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Tile side in pixels. (default: 1024)" in out
    assert "auto (bf16 where native), bf16 or fp32. (default: auto)" in out


def test_outputs_get_their_missing_parent_folders(tmp_path, monkeypatch):
    import emae.cli

    parser = build_parser()
    monkeypatch.setattr(emae.cli, "build_parser", lambda: parser)
    ran = []
    for command in _commands(parser).values():
        command.set_defaults(func=lambda args: ran.append(args.command))
    outputs = {
        "sample-data": ["sample-data", "{out}"],
        "pretrain": ["pretrain", "x.tif", "--out", "{out}"],
        "finetune": ["finetune", "ae", "--labels", "l.csv", "--out", "{out}"],
        "evaluate": ["evaluate", "clf", "--labels", "l.csv", "--out", "{out}"],
        "compare": ["compare", "--labels", "l.csv", "--out", "{out}"],
        "score": ["score", "ae", "x.tif", "--out", "{out}.tif"],
        "detect": ["detect", "ae", "x.tif", "--out", "{out}.zarr"],
        "pipeline": ["pipeline", "p.yaml", "--out", "{out}"],
        "report": ["report", "run", "--out", "{out}.html"],
        "demo": ["demo", "--out", "{out}"],
    }
    for name, argv in outputs.items():
        out = tmp_path / name / "runs" / "new"
        assert main([a.format(out=out) for a in argv]) == 0
        assert out.parent.is_dir(), name
        assert not any(out.parent.iterdir())  # the folder, not the output: the command writes it
    assert ran == list(outputs)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model):
    """A copy of the tiny autoencoder folder and a (2, 90, 70) volume to detect on."""
    from emae.io import write_tiff
    from emae.synth.tissue import make_volume, to_uint8

    root = tmp_path_factory.mktemp("cli")
    write_tiff(root / "stack.tif", to_uint8(make_volume((2, 90, 70), seed=4)), axes="ZYX")
    shutil.copytree(tiny_model, root / "run")
    return root


def test_a_local_cluster_detect_logs_no_error(tiny_run, tmp_path, caplog):
    # The scheduler logged "Removing worker ... caused the cluster to lose scattered data" as an
    # ERROR when the cluster shut down before the client that held the scattered model.
    argv = ["-q", "detect", str(tiny_run / "run"), str(tiny_run / "stack.tif"), "--out"]
    argv += [str(tmp_path / "d.zarr"), "--chunk", "40", "--tile", "48", "--overlap", "16"]
    dask_logs = logging.getLogger("distributed")  # does not propagate to the root logger
    dask_logs.addHandler(caplog.handler)
    try:
        assert main([*argv, "--workers", "2"]) == 0
    finally:
        dask_logs.removeHandler(caplog.handler)
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors
