"""``xraygpt <command>``: one console script, a subcommand for every CLI, --help without torch."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib

import pytest

from xraygpt.cli import COMMANDS, main
from xraygpt.common.config import REPO_ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_console_script_is_declared():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["xraygpt"] == "xraygpt.cli:main"


def test_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, help_text) in COMMANDS.items():
        assert f"  {name} " in out and help_text in out


def test_help_imports_no_torch():
    done = _run(
        "-c",
        "import sys; from xraygpt.cli import main; main(['--help']); "
        "heavy = [m for m in ('torch', 'gradio', 'transformers') if m in sys.modules]; "
        "print('heavy:', heavy)",
    )
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_is_a_module_with_main(name):
    module = importlib.import_module(f"xraygpt.cli.{COMMANDS[name][0]}")
    assert callable(module.main)


@pytest.mark.parametrize("name", ["train", "phantom", "score", "export"])
def test_command_help_answers(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_an_unknown_command_is_one_line_naming_the_closest(capsys):
    assert main(["phantm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: xraygpt: no command 'phantm'") and "'phantom'" in err
    assert main([]) == 2  # no command: the list, and a failing status


def test_python_m_xraygpt_runs_the_same_commands():
    done = _run("-m", "xraygpt", "--help")
    assert done.returncode == 0 and "chat-eval" in done.stdout
    done = _run("-m", "xraygpt", "score", "--predictions", "no/such.jsonl")
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr


def test_the_old_module_paths_are_gone():
    for old in ("xraygpt.tools", "xraygpt.evaluate", "xraygpt.export.__main__"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_debug_before_the_command_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: mini_gpt4, model_type: tiny, no_such_key: 1}\n")
    quiet = _run("-m", "xraygpt", "summary", "--cfg-path", str(bad))
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert "no_such_key" in quiet.stderr
    loud = _run("-m", "xraygpt", "--debug", "summary", "--cfg-path", str(bad))
    assert loud.returncode != 0 and "Traceback" in loud.stderr
