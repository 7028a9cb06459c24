"""CLI conventions: help for every command, the installed console script, exit codes."""
import shutil
import subprocess
import sys

import pytest

from qnas_deploy.cli import cli, main


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_documents_its_options(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    for param in cli.commands[command].params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.opts[0] in out


def test_console_script_runs_the_main_job():
    exe = shutil.which("qnas-deploy") or None
    cmd = [exe] if exe else [sys.executable, "-m", "qnas_deploy.cli"]
    r = subprocess.run(cmd + ["info", "basic_mixed"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "BitOps" in r.stdout and "head.0" in r.stdout


def test_unknown_zoo_entry_exits_2(capsys):
    assert main(["info", "no_such_arch"]) == 2
    assert capsys.readouterr().err.startswith("error: no_such_arch: no such file")


def test_zoo_command_lists_entries(capsys):
    assert main(["zoo"]) == 0
    assert "basic_mixed" in capsys.readouterr().out
