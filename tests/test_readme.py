"""The README's two set-up commands are the contract; CI must run exactly the second one."""

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", setup, flags=re.S)


def test_readme_starts_with_a_spaces_header():
    header = (REPO / "README.md").read_text(encoding="utf-8").split("---")[1]
    assert "sdk: gradio" in header and "app_file: app.py" in header


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    install_and_run, run_tests = commands
    assert "python3 -m venv .venv" in install_and_run and "-r requirements.txt" in install_and_run
    assert install_and_run.rstrip().endswith("app.py")
    assert "pytest" in run_tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci_script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1].strip() in ci_script.splitlines()


def test_public_api_names_all_resolve():
    import geodemo

    for name in geodemo.__all__:
        assert getattr(geodemo, name) is not None, name
