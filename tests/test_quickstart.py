"""The README's Quick start is what CI runs: a virtual environment, then the two commands."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart() -> list[str]:
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "quickstart.py"), str(ROOT / "README.md")],
                       capture_output=True, text=True, check=True, timeout=60)
    return r.stdout.splitlines()


def test_ci_runs_the_readme_block_as_written():
    commands = _quickstart()
    readme = (ROOT / "README.md").read_text()
    assert "```bash\n" + "\n".join(commands) + "\n```" in readme
    assert commands[0] == "python3 -m venv .venv && . .venv/bin/activate"
    assert commands[1] == "python3 -m pip install torch==2.13.0 -e . && qnas-deploy demo -o qnas-demo"
    assert commands[2] == ("apt-get update -qq && apt-get install -y -qq qemu-user-static mmdebstrap "
                           "flatbuffers-compiler && "
                           "qnas-deploy target setup aarch64")
    assert commands[3] == "python3 -m pip install torch==2.13.0 -e '.[test,cluster]' && python3 -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 .ci/quickstart.py README.md" in ci and "pip install" not in ci


def test_readme_says_how_to_get_the_cpu_build_elsewhere():
    readme = (ROOT / "README.md").read_text()
    assert "`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`" in readme


def test_the_demo_folder_is_ignored():
    assert "qnas-demo/" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_readme_without_the_block_fails_loudly(tmp_path):
    (tmp_path / "README.md").write_text("# x\n\n## Quick start\n\nno commands\n\n## Next\n")
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "quickstart.py"), str(tmp_path / "README.md")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no complete fenced block" in r.stderr
