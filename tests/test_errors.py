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
