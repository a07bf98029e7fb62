"""The layering of docs/architecture.md holds: no module imports a layer above its own, and outside ``tasks/`` the
package does not branch on the task."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "taxotrain"
# taxotrain: the package's __version__ only
CORE = {"errors", "config", "taxonomy", "files", "losses", "stages", "run_folder", "registry", "taxotrain"}
ALLOWED = {
    "data": CORE,
    "models": CORE,
    "tasks": CORE | {"data", "models"},
    "run": CORE | {"data", "tasks"},
    "training": CORE | {"data", "tasks", "run"},
    "inference": CORE | {"data", "tasks", "run"},
    "evaluation": CORE | {"data", "tasks", "run", "inference"},
    "tuning": CORE | {"data", "tasks", "training"},
    "export": CORE | {"data", "tasks", "run", "inference"},
    **{core: CORE for core in CORE - {"taxotrain"}},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "taxotrain"


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        me = path.relative_to(PACKAGE).with_suffix("").parts[0]
        if me not in ALLOWED:
            continue  # the top: __init__, cli, demo, docs
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and (module == "taxotrain" or module.startswith("taxotrain.")):  # taxotrain_runtime: below all
                other = _layer(module)
                if other != me and other not in ALLOWED[me]:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {node.module}")
    assert not wrong, wrong


def test_outside_tasks_the_package_branches_on_the_task_in_at_most_three_places() -> None:
    # the count: grep -rnE 'task ==|task !=|kind ==|"signal"|"image"' src/taxotrain, outside tasks/
    pattern = re.compile(r'task ==|task !=|kind ==|"signal"|"image"')
    hits = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py") if "tasks" not in p.parts
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert len(hits) <= 3, hits


def test_importing_the_library_and_the_cli_and_listing_tasks_loads_no_heavy_library() -> None:
    code = ("import sys, taxotrain; from taxotrain.config import load_config; load_config(None, ['task=signal']); "
            "import taxotrain.cli; taxotrain.list_tasks(); "
            "print(sorted(m for m in ('torch', 'lightning', 'timm', 'optuna', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


RUNTIME = PACKAGE.parents[1] / "runtime" / "src" / "taxotrain_runtime"
RUNTIME_MAY_IMPORT = {"numpy", "PIL", "onnxruntime", "taxotrain_runtime"}


def test_the_runtime_imports_only_numpy_pillow_onnxruntime_and_the_standard_library() -> None:
    wrong = []
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top not in RUNTIME_MAY_IMPORT and top not in sys.stdlib_module_names:
                    wrong.append(f"{path.name} imports {name}")
    assert RUNTIME.is_dir() and not wrong, wrong
