"""Run the widget's tests against the lowest anywidget and ipywidgets pyproject.toml allows.

``make test-floors``: a fresh venv holds only those two at their floors (and the lowest
widgetsnbextension / jupyterlab_widgets that ipywidgets floor allows, whose front-end
JupyterLab loads); every other package (torch, JupyterLab, pytest...) comes from the
project's venv through a ``.pth`` file placed after them on ``sys.path``. Then the widget's
unit tests and one JupyterLab browser test run with that venv's Python.

Usage: ``python tests/floors.py VENV_DIR`` (run with the project venv's Python).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
FLOORED = ("anywidget", "ipywidgets")
# ipywidgets' own front-end packages: the lowest that the ipywidgets floor accepts.
COMPANIONS = ("widgetsnbextension", "jupyterlab-widgets")
UNIT_TESTS = ["tests/test_widget.py", "tests/test_host_fallback.py", "tests/test_jacobian.py"]
BROWSER_TEST = ["tests/e2e/test_graph_widget.py", "-k", "test_mlp_widget and lab"]


def declared_floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", dep)
        if m and m.group(1).lower() in FLOORED:
            floors[m.group(1).lower()] = m.group(2)
    missing = set(FLOORED) - set(floors)
    if missing:
        raise SystemExit(f"pyproject.toml declares no >= floor for {sorted(missing)}")
    return floors


def link_jupyter_data(venv: Path) -> None:
    """The project venv's Jupyter data and config (JupyterLab's assets, other front-end
    extensions, server extensions) in the floor venv, except what the floors installed."""
    project = Path(sys.prefix)
    for sub in ("share/jupyter", "share/jupyter/labextensions", "etc/jupyter"):
        src, dst = project / sub, venv / sub
        if not src.is_dir():
            continue
        dst.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            target = dst / entry.name
            if not target.exists():
                target.symlink_to(entry)


def run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def main(venv: Path) -> int:
    floors = declared_floors()
    shutil.rmtree(venv, ignore_errors=True)
    run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    pip = [py, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check"]
    run(*pip, *(f"{name}=={v}" for name, v in floors.items()))
    # The companions' lowest versions, from the floor ipywidgets' own requirements.
    requires = subprocess.run(
        [py, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('ipywidgets')))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    pins = []
    for req in requires:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*\(?\s*(?:~=|>=)\s*([0-9][0-9.]*)", req)
        if m and m.group(1).lower().replace("_", "-") in COMPANIONS and "extra" not in req:
            pins.append(f"{m.group(1)}=={m.group(2)}")
    run(*pip, *pins)
    # Everything else from the project's venv, after the floor venv's own site-packages
    # (written last, so pip above saw only the floor venv).
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    link_jupyter_data(venv)
    project_site = sysconfig.get_paths()["purelib"]
    (site / "zz_project_venv.pth").write_text(f"import site; site.addsitedir({project_site!r})\n")

    # What that Python really imports.
    check = (
        "import importlib.metadata as m, anywidget, ipywidgets, jupyterlab_widgets, torch;"
        "print({n: m.version(n) for n in ('anywidget', 'ipywidgets', 'jupyterlab_widgets',"
        " 'widgetsnbextension')}, 'torch', torch.__version__);"
        "print('from', anywidget.__file__, ipywidgets.__file__, sep='\\n  ')"
    )
    out = run(py, "-c", check, capture_output=True, text=True).stdout
    print(out, end="")
    for name, v in floors.items():
        want = v if v.count(".") >= 2 else f"{v}.0"
        if f"'{name}': '{want}'" not in out:
            raise SystemExit(f"{name} imported is not the declared floor {want}")
    if str(venv) not in out:
        raise SystemExit("the floor packages are not the ones imported")

    env_note = f"floors {floors} + {pins}"
    print(f"running the widget's tests against {env_note}", flush=True)
    common = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
    run(py, *common, *UNIT_TESTS, "-m", "not browser", cwd=ROOT)
    run(py, *common, *BROWSER_TEST, cwd=ROOT)
    print(f"ok: {env_note}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
