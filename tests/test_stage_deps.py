"""Every DVC stage depends on exactly the `emocare/` code it runs: the files its script imports, transitively
(lazy imports inside functions included), read from the source with `ast`, against its `deps` in dvc.yaml."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from emocare.data import DATASET_MODULES
from emocare.models import MODEL_MODULES

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The file of module ``emocare.x.y`` (a module or a package's ``__init__``), or None if none exists."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts[:-1])


def imported_modules(path: Path) -> set[str]:
    """The ``emocare`` modules named by every import statement in ``path``, wherever it stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package(path).split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    found = set()
    for parts in (name.split(".") for name in names):
        if parts[0] == "emocare":
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # parent packages run first
    return {n for n in found if module_file(n)}


def closure(script: Path, entry_modules: list[str]) -> set[Path]:
    """Every ``emocare/`` file that running ``script`` (through ``entry_modules``, e.g. ``-m``) may execute."""
    todo = [script, *(module_file(m) for m in entry_modules)]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(m) for m in imported_modules(path))
    return {p for p in seen if p.is_relative_to(ROOT / "emocare")}


def stages() -> dict[str, dict]:
    """dvc.yaml's stages (none uses ``foreach``: stages of one script differ in the modules they import)."""
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def declared(stage: dict) -> set[Path]:
    """The ``emocare/`` Python files among a stage's deps (a folder stands for every file under it)."""
    files: set[Path] = set()
    for dep in stage.get("deps", []):
        path = ROOT / dep
        if path.is_dir():
            files.update(path.rglob("*.py"))
        elif path.suffix == ".py":
            files.add(path)
    return {p for p in files if p.is_relative_to(ROOT / "emocare") and "__pycache__" not in p.parts}


def ran(stage: dict) -> set[Path]:
    """The files a stage's command runs. A stage script given a modality (``train_specialist.py image``) builds
    or loads that modality's model through :data:`emocare.models.MODEL_MODULES`, and its dataset through
    :data:`emocare.data.DATASET_MODULES`: their modules count too."""
    cmd = stage["cmd"]
    script = re.search(r"(stages/\w+\.py)(?: (\w+))?", cmd)
    assert script, f"no stage script in {cmd!r}"
    entry = re.findall(r"-m (emocare[\w.]*)", cmd)
    files = closure(ROOT / script.group(1), entry)
    if script.group(2) in MODEL_MODULES and module_file("emocare.models") in files:
        files |= closure(module_file(MODEL_MODULES[script.group(2)]), [])
    if script.group(2) in DATASET_MODULES and module_file("emocare.data") in files:
        files |= closure(module_file(DATASET_MODULES[script.group(2)][0]), [])
    return files


def _relative(paths: set[Path]) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in paths)


@pytest.mark.parametrize(("name", "stage"), sorted(stages().items()))
def test_stage_deps_are_exactly_its_imports(name, stage):
    imports, deps = ran(stage), declared(stage)
    assert not imports - deps, f"stage {name} imports modules it does not depend on: {_relative(imports - deps)}"
    assert not deps - imports, f"stage {name} depends on modules it never imports: {_relative(deps - imports)}"


def test_closure_follows_lazy_imports():
    """The import reader sees imports inside functions, ``from pkg import submodule`` and parent packages."""
    found = imported_modules(ROOT / "emocare" / "cli.py")
    assert "emocare.reddit.cli" in found  # a top-level `from emocare.reddit import cli`
    assert "emocare.bulk" in found  # imported inside cmd_predict only
    assert "emocare.data" in found  # the parent package of emocare.data.demo


def test_the_import_graph_keeps_concerns_apart():
    """Exact deps are cheap only if a stage imports little: specialists never import the fusion model, no library
    module imports the training pipeline (emocare/pipeline/), and no stage imports the edges (serving, bulk
    prediction, trends, Reddit, the CLI)."""
    by_stage = {name: ran(stage) for name, stage in stages().items()}
    fusion_model, vision = ROOT / "emocare/models/fusion.py", ROOT / "emocare/models/vision.py"
    assert [n for n, files in by_stage.items() if fusion_model in files] == ["fusion"]
    assert sorted(n for n, files in by_stage.items() if vision in files) == [
        "embed_image", "embed_video", "train_image", "train_video"]
    pipeline = ROOT / "emocare" / "pipeline"
    library = [p for p in (ROOT / "emocare").rglob("*.py") if not p.is_relative_to(pipeline)]
    importers = sorted(str(p.relative_to(ROOT)) for p in library if closure(p, []) & set(pipeline.rglob("*.py")))
    assert not importers, f"library modules import the training pipeline (emocare/pipeline/): {importers}"
    edges = {p for p in (ROOT / "emocare").rglob("*.py") if p.name in ("cli.py", "bulk.py", "trends.py", "predict.py")
             or {"serving", "reddit"} & set(p.parts)}
    assert not set().union(*by_stage.values()) & edges


def test_models_hold_models():
    """No module in emocare/models/ builds datasets or fills the feature store: that is data loading
    (emocare/data/), beside the data. Imports are read from the source, lazy ones too."""
    forbidden = ("emocare.data", "emocare.media.feature_store")
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in imported_modules(p) if n.startswith(forbidden))
                 for p in sorted((ROOT / "emocare" / "models").rglob("*.py"))}
    assert not {p: names for p, names in offenders.items() if names}
