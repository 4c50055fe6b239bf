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


def _envfile():
    import runpy

    return runpy.run_path(str(ROOT / "tools" / "envfile.py"))


def test_environment_yml_is_generated_from_the_lock():
    tool = _envfile()
    want = tool["render"]((ROOT / "pyproject.toml").read_text(), (ROOT / "uv.lock").read_text())
    assert (ROOT / "environment.yml").read_text() == want, "run `make lock` (tools/envfile.py)"
    locked = tool["locked_versions"]((ROOT / "uv.lock").read_text())
    pinned = {r.split("==")[0]: r.split("==")[1] for r in _conda_requirements()}
    assert pinned == {n: locked[n] for n in pinned}


def test_locked_versions_satisfy_pyproject_ranges():
    from packaging.requirements import Requirement

    locked = _envfile()["locked_versions"]((ROOT / "uv.lock").read_text())
    for req in map(Requirement, _pyproject_requirements()):
        name = req.name.lower().replace("_", "-")
        assert name in locked, f"{name} missing from uv.lock: run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), (name, locked[name], str(req))


def test_lock_is_for_this_pyproject():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    me = next(p for p in lock["package"] if p["name"] == "vlmbook")
    declared = {d["name"] for d in me.get("dependencies", [])}
    assert declared == {Requirement_name(r) for r in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}


def Requirement_name(req: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(req).name.lower().replace("_", "-")


def test_python_versions_agree():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lo, hi = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", requires.replace(" ", "")).groups()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python>=3.{lo},<3.{hi}" in env["dependencies"]
    readme = (ROOT / "README.md").read_text()
    assert f"Python 3.{lo}–3.{int(hi) - 1}" in readme
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert lock["requires-python"].replace(" ", "") == requires.replace(" ", "")


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
