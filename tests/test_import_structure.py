"""The package's layers: no module imports itself back through others (an import cycle), and
the report layer renders only, never reaching the code that trains or runs experiments."""

from __future__ import annotations

import ast
from pathlib import Path

import vipnb

PACKAGE = Path(vipnb.__file__).parent
TRAINING = {"vipnb.engine.training", "vipnb.engine.trainer", "vipnb.engine.parallel",
            "vipnb.engine.tasks", "vipnb.study"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every vipnb module `path` imports, at the top or inside functions, except under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
               and getattr(branch.test, "id", None) == "TYPE_CHECKING"
               for node in ast.walk(branch)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vipnb"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vipnb"))
    return found


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target == module or target not in GRAPH or target == "vipnb":
                continue
            if state.get(target) == "open":
                cycles.append(" → ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_report_layer_imports_no_training_or_study_code():
    reaching = {module: sorted(target for target in targets
                               if any(target == t or target.startswith(t + ".")
                                      for t in TRAINING))
                for module, targets in GRAPH.items() if module.startswith("vipnb.report")}
    assert not {m: t for m, t in reaching.items() if t}


# Configuration is read at the edge (the CLI, the runner, the notebooks) and passed down.
# Allowed below it: the variables of the tools themselves (torchrun's, WordNet's), which
# vipnb does not define and a user sets for those tools.
READS_ALLOWED = {
    "vipnb/engine/distributed.py": "torchrun's WORLD_SIZE and LOCAL_RANK",
    "vipnb/data/workers.py": "torchrun's LOCAL_WORLD_SIZE (the CPUs' share of one process)",
    "vipnb/report/wordnet_names.py": "WordNet's own WNSEARCHDIR",
    "vipnb/engine/determinism.py": "cuBLAS's CUBLAS_WORKSPACE_CONFIG (set for deterministic "
                                   "runs unless the user set it)",
}


def imports_paths(path: Path) -> bool:
    """Whether `path` imports `vipnb.paths` (either spelling)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "vipnb" and any(
                alias.name == "paths" for alias in node.names):
            return True
        if "vipnb.paths" in {getattr(node, "module", None),
                             *(a.name for a in getattr(node, "names", []) or [])}:
            return True
    return False


def test_below_the_edge_nothing_reads_the_environment_or_the_default_places():
    readers = []
    for layer in ("engine", "data", "eval", "report", "study"):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            relative = str(path.relative_to(PACKAGE.parent))
            reads = "os.environ" in path.read_text() or imports_paths(path)
            if reads and relative not in READS_ALLOWED:
                readers.append(relative)
    assert not readers, f"read configuration below the edge: {readers}"
