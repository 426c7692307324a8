"""The README starts with the two commands, and CI runs exactly the second one."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_the_demo_and_the_test_command():
    commands = readme_commands()
    assert len(commands) >= 2
    demo, tests = commands[0], commands[1]
    assert "run inference" in demo and "pip install -q torch==2.13.0" in demo
    assert "pytest" in tests and "pip install -q torch==2.13.0" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
