"""The set-up stays honest: environment.yml matches pyproject, the README names two commands."""
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(data["dependencies"])
    for extra in data["optional-dependencies"].values():
        reqs += extra
    return {r.replace(" ", "") for r in reqs}


def _conda_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {r.replace(" ", "") for r in pip if not r.startswith("-e")}


def test_environment_yml_matches_pyproject():
    assert _conda_requirements() == _pyproject_requirements()


def test_no_exact_pins():
    assert not [r for r in _pyproject_requirements() if "==" in r]


def test_readme_names_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make book", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_console_script_and_version():
    import vlmbook

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert data["scripts"]["vlmbook"] == "vlmbook.cli:main"
    assert data["version"] == vlmbook.__version__


def test_package_never_unpickles_or_downloads():
    bad = re.compile(r"torch\.load\(|pickle\.load|urllib\.request|requests\.get\(|hf_hub_download|from_pretrained\(\s*['\"]\w+/")
    hits = [f"{p}:{i}" for p in (ROOT / "vlmbook").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert not hits, hits


def test_api_reference_lists_every_module():
    import runpy

    api = runpy.run_path(str(ROOT / "tools" / "api.py"))
    assert (ROOT / "book" / "api.md").read_text() == api["render"](), "run `python tools/api.py`"
