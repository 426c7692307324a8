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
    # both come before the first section, with where the outputs go and what the demo's data is
    opening = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    assert demo in opening and tests in opening
    assert "andi_output/" in opening and "made (synthetic) data" in " ".join(opening.split())


def test_the_demo_is_one_command_that_stops_at_the_first_failure():
    """Command 1 may span lines, but each line goes on with ``&&``: pasted whole, it is one command."""
    lines = readme_commands()[0].splitlines()
    assert all(line.rstrip().endswith("&&") for line in lines[:-1]), lines
    assert not lines[-1].rstrip().endswith(("&&", "\\"))


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
