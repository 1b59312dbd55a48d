"""Static checks of the tutorials, binder/ and the README against the package (no kernel).

nbval (``make test-notebooks``) runs the notebooks; these tests catch the cheaper mistakes first
and say exactly what is wrong: a ``gw.`` name that is gone, a module Binder does not install, a
stale traceback saved in a notebook, a dead link, a README command that does not exist.
``make test-binder`` checks the Binder recipe itself in a fresh venv from a clean clone.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import nbformat
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import gradwidget

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BINDER = ROOT / "binder"
README = ROOT / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: The tutorial path, in order.
TUTORIALS = (
    "00-quickstart",
    "01-gradients",
    "02-jacobian",
    "03-learning-rate-and-optimizers",
    "04-a-real-model",
    "05-lightning-and-hugging-face",
)

# Cell magics whose body is Python (``%%train`` runs it as the training loop).
PYTHON_CELL_MAGICS = {"train", "time", "timeit", "capture", "prun"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PICTURES = ("image/svg+xml", "image/png", "text/html")


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def nb_id(path: Path) -> str:
    return path.stem


NB = pytest.mark.parametrize("path", notebook_paths(), ids=nb_id)


@cache
def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(path: Path):
    return [c for c in read(path).cells if c.cell_type == "code"]


def require_tutorial(stem: str) -> Path:
    """Path of a tutorial; fails when it is missing."""
    path = NOTEBOOKS / f"{stem}.ipynb"
    if not path.exists():
        pytest.fail(f"notebooks/{path.name} is missing")
    return path


# ---- parsing code the way IPython sees it ---------------------------------------------------


def split_magics(source: str) -> tuple[str, list[str], list[str]]:
    """Python code of a cell (magics blanked), and its line and cell magic names.

    Blanking (not deleting) keeps line numbers right in syntax-error messages. A cell magic whose
    body is not Python (``%%bash``) leaves no code.
    """
    lines = source.splitlines()
    cell_magics: list[str] = []
    if lines and lines[0].lstrip().startswith("%%"):
        name = lines[0].lstrip()[2:].split()[0]
        cell_magics.append(name)
        if name not in PYTHON_CELL_MAGICS:
            return "", [], cell_magics
        lines[0] = ""
    line_magics = []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            if stripped.startswith("%") and stripped[1:].split():
                line_magics.append(stripped[1:].split()[0])
            lines[i] = ""
    return "\n".join(lines), line_magics, cell_magics


def parse(source: str, where: str) -> ast.Module:
    code, _, _ = split_magics(source)
    try:
        return ast.parse(code, filename=where)
    except SyntaxError as e:
        pytest.fail(f"{where}: not valid Python: {e}")


def code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", markdown, flags=re.S)


def gw_attributes(tree: ast.Module) -> set[str]:
    """Names used as ``gw.NAME`` / ``gradwidget.NAME`` or imported ``from gradwidget``."""
    aliases = {"gradwidget"}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "gradwidget"}
        elif isinstance(node, ast.ImportFrom) and node.module == "gradwidget" and not node.level:
            used |= {a.name for a in node.names}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            used.add(node.attr)
    return used


def imported_modules(tree: ast.Module) -> set[str]:
    """Top-level names of the absolute imports in ``tree``."""
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            mods.add(node.module.split(".")[0])
    return mods


def notebook_tree(path: Path) -> ast.Module:
    body = []
    for i, cell in enumerate(read(path).cells):
        if cell.cell_type == "code":
            body += parse(cell.source, f"{path.name} cell {i}").body
    return ast.Module(body=body, type_ignores=[])


# ---- what Binder installs --------------------------------------------------------------------


def requirement_lines(path: Path) -> list[Requirement]:
    reqs = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            reqs.append(Requirement(line))
    return reqs


@cache
def binder_closure() -> frozenset[str]:
    """Distributions that ``pip install -r binder/requirements.txt`` brings (names normalized).

    Followed through the metadata of what is installed here, without extras.
    """
    seen: set[str] = set()
    todo = [r.name for r in requirement_lines(BINDER / "requirements.txt")]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return frozenset(seen)


# ---- the notebooks ---------------------------------------------------------------------------


def test_scanner_sees_names_imports_and_magics():
    """The checks below are only as good as this scan: it must see through magics."""
    src = (
        "%%train w --steps 3\n"
        "import gradwidget as g, torch.nn as nn\n"
        "from gradwidget import capture\n"
        "%time x = 1\n"
        "!ls\n"
        "g.nope(gradwidget.show)\n"
    )
    _, line, cell = split_magics(src)
    assert (line, cell) == (["time"], ["train"])
    tree = parse(src, "example")
    assert gw_attributes(tree) == {"nope", "show", "capture"}
    assert imported_modules(tree) == {"gradwidget", "torch"}
    assert split_magics("%%bash\nls -l\n") == ("", [], ["bash"])


@pytest.mark.parametrize("stem", TUTORIALS)
def test_tutorial_exists(stem):
    require_tutorial(stem)


@NB
def test_notebook_is_valid(path):
    nbformat.validate(read(path))
    assert read(path).metadata.get("kernelspec", {}).get("language") == "python"


@NB
def test_gw_names_exist(path):
    missing = sorted(n for n in gw_attributes(notebook_tree(path)) if not hasattr(gradwidget, n))
    assert not missing, f"{path.name} uses gradwidget names that do not exist: {missing}"


@NB
def test_magics_exist(path):
    """Every %magic / %%magic used is registered once the notebook's extensions are loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    line, cell = set(), set()
    for c in code_cells(path):
        _, lm, cm = split_magics(c.source)
        line |= set(lm)
        cell |= set(cm)
    sh = InteractiveShell.instance()
    for c in code_cells(path):
        for m in re.finditer(r"^\s*%load_ext\s+(\S+)", c.source, flags=re.M):
            module = importlib.import_module(m.group(1))
            assert callable(getattr(module, "load_ipython_extension", None)), m.group(1)
            sh.extension_manager.load_extension(m.group(1))  # "already loaded" is fine
    magics = sh.magics_manager.magics
    assert not line - set(magics["line"]), f"unknown line magics in {path.name}"
    assert not cell - set(magics["cell"]), f"unknown cell magics in {path.name}"


def test_load_ext_gradwidget_registers_train():
    from IPython.core.interactiveshell import InteractiveShell

    assert callable(gradwidget.load_ipython_extension)
    sh = InteractiveShell.instance()
    sh.extension_manager.load_extension("gradwidget")
    assert "train" in sh.magics_manager.magics["cell"]


@NB
def test_imports_are_installed_here_and_on_binder(path):
    own = {"gradwidget"}
    stdlib = set(sys.stdlib_module_names)
    third_party = sorted(imported_modules(notebook_tree(path)) - stdlib - own)
    not_here = [m for m in third_party if importlib.util.find_spec(m) is None]
    assert not not_here, f"{path.name} imports modules missing from this venv: {not_here}"
    dists = md.packages_distributions()
    closure = binder_closure()
    not_on_binder = [
        m for m in third_party if not {canonicalize_name(d) for d in dists.get(m, [])} & closure
    ]
    assert not not_on_binder, (
        f"{path.name} imports {not_on_binder}, which binder/requirements.txt does not install"
    )


@NB
def test_no_stale_errors(path):
    bad = []
    for i, cell in enumerate(read(path).cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                bad.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and "Traceback (most recent call last)" in out.text:
                bad.append(f"cell {i}: traceback on {out.name}")
    assert not bad, f"{path.name} has saved errors: {bad}"


@NB
def test_executed_top_to_bottom_with_outputs(path):
    """Stored with outputs, from one clean run (execution counts 1, 2, 3, ...)."""
    counts = [c.execution_count for c in code_cells(path) if c.source.strip()]
    assert counts, f"{path.name} has no code"
    assert None not in counts, f"{path.name} has unexecuted cells: counts {counts}"
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name} was not run top to bottom in one kernel: counts {counts}"
    )
    assert any(c.outputs for c in code_cells(path)), f"{path.name} has no stored outputs"
    # Saved widget state is large and stale; it comes from the executor's default, not needed.
    assert "widgets" not in read(path).metadata, (
        f"{path.name} stores widget state: run nbconvert with "
        "--ExecutePreprocessor.store_widget_state=False"
    )


@NB
def test_widget_outputs_leave_a_picture(path):
    """Where widgets do not render (GitHub, nbviewer), a widget cell still shows something.

    The picture may be in the widget's own output (its static SVG) or in the next code cell
    (e.g. ``JacobianWidget.plot()``).
    """
    cells = code_cells(path)

    def has_picture(cell) -> bool:
        return any(p in out.get("data", {}) for out in cell.outputs for p in PICTURES)

    bare = [
        f"cell with execution count {cell.execution_count}"
        for i, cell in enumerate(cells)
        if any(WIDGET_VIEW in out.get("data", {}) for out in cell.outputs)
        and not has_picture(cell)
        and not (i + 1 < len(cells) and has_picture(cells[i + 1]))
    ]
    assert not bare, f"{path.name}: widget outputs with no static picture (SVG/PNG/HTML): {bare}"


def relative_links(markdown: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)", markdown) + re.findall(r'href="([^"]+)"', markdown)
    return [t.split("#")[0] for t in targets if not re.match(r"^[a-z]+:|^#", t)]


def check_links(links: list[str], base: Path, where: str) -> None:
    missing = sorted({t for t in links if t and not (base / t).exists()})
    assert not missing, f"{where} links to files that do not exist: {missing}"


@NB
def test_links_resolve(path):
    md_text = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    check_links(relative_links(md_text), path.parent, path.name)


# ---- binder/ ---------------------------------------------------------------------------------


def test_binder_installs_every_package_dependency():
    """postBuild installs gradwidget with --no-deps, so requirements.txt must bring its deps."""
    closure = binder_closure()
    deps = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    missing = [str(d) for d in deps if canonicalize_name(d.name) not in closure]
    assert not missing, f"binder/requirements.txt does not install {missing}"


def test_binder_torch_is_the_tested_cpu_pin():
    pins = {r.name: r for r in requirement_lines(ROOT / "constraints.txt")}
    binder = {r.name: r for r in requirement_lines(BINDER / "requirements.txt")}
    assert str(binder["torch"].specifier) == str(pins["torch"].specifier)
    text = (BINDER / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in text, "Binder would pull the multi-GB CUDA build"


def test_binder_recipe_shape():
    """The files repo2docker reads, in the form it reads them."""
    # A binder/ folder makes repo2docker ignore these at the root: keep none there to mislead.
    ignored = ["requirements.txt", "environment.yml", "postBuild", "apt.txt", "runtime.txt"]
    assert not [f for f in ignored if (ROOT / f).exists()]
    # environment.yml would switch to the conda buildpack and skip requirements.txt.
    assert not (BINDER / "environment.yml").exists()
    post = (BINDER / "postBuild").read_text()
    assert post.startswith("#!"), "postBuild needs a shebang"
    assert re.search(r"^set -e", post, flags=re.M), "postBuild must stop on the first error"
    assert os.access(BINDER / "postBuild", os.X_OK), "postBuild is not executable"
    apt = [ln.strip() for ln in (BINDER / "apt.txt").read_text().splitlines()]
    apt = [ln for ln in apt if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", p) for p in apt), apt


# ---- README ----------------------------------------------------------------------------------


def makefile_targets() -> dict[str, str]:
    """Target name -> its recipe text."""
    targets: dict[str, str] = {}
    current = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if m:
            current = m.group(1)
            targets[current] = ""
        elif line.startswith("\t") and current:
            targets[current] += line + "\n"
        elif line.strip() and not line.startswith("#"):
            current = None
    return targets


def test_readme_make_commands_exist():
    text = README.read_text()
    used = set(re.findall(r"\bmake ([a-z][\w-]*)", text))
    assert {"demo", "test"} <= used
    assert not used - set(makefile_targets()), "README names make targets the Makefile lacks"


def test_make_demo_opens_the_quickstart():
    recipe = makefile_targets()["demo"]
    opened = re.findall(r"notebooks/([\w.-]+)\.ipynb", recipe)
    assert opened == ["00-quickstart"], recipe
    require_tutorial("00-quickstart")


def test_readme_paths_exist():
    text = README.read_text()
    pattern = r"(?<![\w/.])((?:bench|notebooks|binder|tests|js)/[\w./*-]*\w)"
    paths = set(re.findall(pattern, text))
    globs = {p for p in paths if "*" in p}
    assert all(any(ROOT.glob(g)) for g in globs), f"README globs match nothing: {globs}"
    paths -= globs
    paths |= {p for p in ("constraints.txt", "requirements-dev.txt") if p in text}
    check_links(sorted(paths), ROOT, "README.md")


def test_readme_links_resolve():
    check_links(relative_links(README.read_text()), ROOT, "README.md")


def test_readme_install_matches_pyproject():
    text = README.read_text()
    assert f"pip install {PYPROJECT['project']['name']}" in text
    torch_dep = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    for spec in re.findall(r"torch(>=[\d.]+)", text):
        assert f"torch{spec}" == torch_dep, f"README says torch{spec}, pyproject {torch_dep}"
    for pin in re.findall(r"torch==[\d.]+", text):
        assert pin in (ROOT / "constraints.txt").read_text(), pin


def test_readme_python_uses_existing_names():
    for i, block in enumerate(code_blocks(README.read_text(), "python")):
        tree = parse(block, f"README.md python block {i}")
        missing = sorted(n for n in gw_attributes(tree) if not hasattr(gradwidget, n))
        assert not missing, f"README python block {i} uses missing names {missing}"


def test_readme_binder_badge():
    """One badge; it and every Binder link open the quickstart in JupyterLab."""
    text = README.read_text()
    assert text.count("https://mybinder.org/badge_logo.svg") == 1
    links = set(re.findall(r"\(https://mybinder\.org/v2/gh/([^)\s]+)\)", text))
    assert len(links) == 1, f"expected one Binder target, found {links}"
    (link,) = links
    m = re.fullmatch(r"[\w.-]+/[\w.-]+/[\w.-]+\?urlpath=lab/tree/(notebooks/[\w.-]+)", link)
    assert m, f"Binder link should be OWNER/REPO/BRANCH?urlpath=lab/tree/...: {link}"
    assert m.group(1) == "notebooks/00-quickstart.ipynb"
    require_tutorial("00-quickstart")


def test_readme_lists_the_tutorials():
    text = README.read_text()
    section = re.search(r"^## Tutorials\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert section, "README has no '## Tutorials' section"
    listed = re.findall(r"\]\(notebooks/([\w.-]+)\.ipynb\)", section.group(1))
    assert listed == list(TUTORIALS), listed


# ---- the wheel -------------------------------------------------------------------------------


def static_files_read() -> set[str]:
    """Files under gradwidget/static/ that the package reads at run time."""
    names = set()
    for py in (ROOT / "gradwidget").glob("*.py"):
        names |= set(re.findall(r'STATIC\s*/\s*"([^"]+)"', py.read_text()))
    return names


def test_build_ensures_every_static_file():
    """A build that lost one of these must fail, not ship a package that breaks at import."""
    hook = PYPROJECT["tool"]["hatch"]["build"]["hooks"]["jupyter-builder"]
    ensured = {Path(p).name for p in hook["ensured-targets"]}
    assert static_files_read() <= ensured, static_files_read() - ensured


def test_wheel_ships_the_front_end(tmp_path):
    """The wheel has every static file and no node_modules.

    Builds from this tree (the JS build hook is skipped when gradwidget/static exists); set
    GRADWIDGET_WHEEL to check a wheel built elsewhere (``make test-binder`` does, from a clean
    clone).
    """
    wheel = os.environ.get("GRADWIDGET_WHEEL")
    if not wheel:
        if not (ROOT / "gradwidget/static/widget.js").exists():
            pytest.skip("gradwidget/static is not built (make js)")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        subprocess.run([*cmd, "-q", "-w", str(tmp_path), str(ROOT)], check=True)
        (wheel,) = tmp_path.glob("gradwidget-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    static = {Path(n).name for n in names if n.startswith("gradwidget/static/")}
    expected = static_files_read() | {"stub.js", "loader.js", "widget.js", "viz.mjs.gz"}
    assert expected <= static, f"wheel lacks {sorted(expected - static)}"
    assert not [n for n in names if "node_modules" in n or n.startswith(("js/", ".venv"))]
    record = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = zipfile.ZipFile(wheel).read(record).decode()
    assert "Requires-Dist: torch>=2.5" in meta and "Requires-Dist: anywidget>=0.11" in meta
