"""Command bodies: a TasbRayError is one line on stderr and exit 2, Ctrl-C exit 130, anything else a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasb_ray.errors import ConfigError, run_guarded


def test_run_guarded_value_error_interrupt(capsys):
    assert run_guarded("prog", lambda: 7) == (7, None)

    def bad():
        raise ConfigError("x.yaml:3: invalid YAML")
    assert run_guarded("prog", bad) == (None, 2)
    assert capsys.readouterr().err == "prog: error: x.yaml:3: invalid YAML\n"

    def stop():
        raise KeyboardInterrupt
    assert run_guarded("prog", stop, "interrupted; run it again") == (None, 130)
    assert capsys.readouterr().err == "prog: interrupted; run it again\n"

    def bug():
        raise ValueError("a bug")
    with pytest.raises(ValueError):
        run_guarded("prog", bug)


def test_sweep_entry_point_missing_config(tmp_path, capsys):
    from tasb_ray.experiments.main import main

    missing = tmp_path / "nope.yaml"
    assert main("experiments/seeds.py", "d", Path("unused.yaml"), argv=["--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("experiments/seeds.py: error:") and str(missing) in err


def _raise(exc):
    def body():
        raise exc
    return body


def _yaml_error():
    import yaml

    try:
        yaml.safe_load("a: {")
    except yaml.YAMLError as e:
        return e


def _decode_error():
    try:
        b"ok \xff".decode("utf-8")
    except UnicodeDecodeError as e:
        return e


@pytest.mark.parametrize("exc, line", [
    (PermissionError(13, "Permission denied", "/data/x/corpus.jsonl"), "/data/x/corpus.jsonl: permission denied"),
    (_decode_error(), "input is not valid utf-8 (byte 0xff at offset 3)"),
    (RecursionError("maximum recursion depth exceeded"), "input nested too deeply"),
    (_yaml_error(), "input: invalid YAML: expected the node content, but found '<stream end>' (line 1, column 5)"),
])
def test_run_guarded_input_errors_that_escaped_are_one_line(capsys, exc, line):
    assert run_guarded("prog", _raise(exc)) == (None, 2)
    err = capsys.readouterr().err
    assert err.startswith(f"prog: error: {line}") and err.count("\n") == 1
