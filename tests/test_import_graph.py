"""zoo's import graph, read statically (AST), so these tests are fast and import nothing.

- No cycles among zoo's modules, counting the imports a module runs when it is imported (module level, class
  bodies, ``try``/``if`` blocks; not ``if TYPE_CHECKING:``).
- No module imports another module's private (``_name``) names.
- A function-level (deferred) import is only for something heavy, so that commands that do not need it never load
  it: a heavy third-party package (``HEAVY``), or a zoo module that imports one when it is imported. A deferred
  import of anything light only hides an arrow of the graph; the few that are deliberate are listed in
  ``DEFERRED`` with the reason.
- The core (``CORE``: errors, genes and the protocols at the bottom, extraction and materialization on them)
  imports only the core, and never ``transformers``, ``safetensors`` or ``zoo.hf``, their implementation of the
  protocols: not at module level, not in a function, not for type checking. ``zoo.hf`` imports only the core, so
  everything that imports it (the registry, the application layer, ``api``, ``cli``, ``testing``, the plugins)
  sits above it. Outside ``zoo.hf`` the two libraries are used directly only by the application-layer modules in
  ``HF_USERS``, each with the reason.
- The top of the graph (``TOP_LAYERS``), from the top down: the commands and the testing kit; the facade (``zoo.api``
  and the package's lazy re-exports); the application package ``zoo.app`` (adding, materializing, listing). Each
  imports only its own layer and the ones below it, and every other zoo module (the registry, ``zoo.hf``, the core
  and the application layer's other modules: resolver, request, model folders, calibration, refine, sharing) sits
  below ``zoo.app`` and imports none of them. ``zoo.app`` is imported only by ``zoo.api``: the CLI reaches it
  through the facade, which defines nothing but the keyword forms of the public functions.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"

# Third-party packages that cost noticeable import time or are optional.
HEAVY = frozenset({
    "torch", "transformers", "safetensors", "scipy", "numpy", "timm", "onnx", "gguf", "pywt", "PIL", "accelerate",
    "huggingface_hub", "tqdm", "sqlalchemy", "alembic", "psycopg", "psycopg2", "pydoc_data",
    "skimage",  # optional: calibration photographs
})
# (importing module, imported module): why the import is deferred although the imported module is light.
DEFERRED = {
    ("zoo.testing", "zoo.cli"): "importing zoo.cli loads every plugin; zoo.testing is loaded by every pytest session",
}
# The bottom of the graph: errors, genes, the protocols (adapters, transforms, hooks) and what extraction and
# materialization are built from, then extraction and materialization themselves.
CORE = frozenset({
    "zoo._version", "zoo.errors", "zoo.genes", "zoo.adapters", "zoo.transforms", "zoo.hookspecs", "zoo.dtypes",
    "zoo.stats", "zoo.parallel", "zoo.calibrate", "zoo.extraction", "zoo.materialization",
})
HF = "zoo.hf"  # the transformers/safetensors implementation of the protocols
HF_LIBRARIES = frozenset({"transformers", "safetensors"})
# (module outside zoo.hf, library): why it uses the library itself. Each is an application-layer user of
# transformers, not part of the implementation of the protocols.
HF_USERS = {
    ("zoo.calibration", "transformers"): "tokenizes the calibration text with the source's tokenizer (AutoTokenizer)",
    ("zoo.refine_train", "transformers"): "the training task of a model type and its tokenizer (auto mappings)",
    ("zoo.cli", "transformers"): "quiets transformers' own logging and progress bars (--quiet, no terminal)",
}
APP = "zoo.app"  # the application layer's package: adding learngenes, materializing, listing (zoo/app/__init__.py)
FACADE = "zoo.api"
# The top of the graph, from the top down: each layer's name and modules (a package counts with its submodules,
# but for the zoo package itself: its __init__ only).
TOP_LAYERS = (
    ("the commands and the testing kit", frozenset({"zoo.cli", "zoo.__main__", "zoo.testing"})),
    ("the facade", frozenset({FACADE, "zoo"})),  # zoo/__init__.py loads the public functions from zoo.api
    ("the application layer", frozenset({APP})),
)


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)  # run at import time: zoo modules and top-level packages
    deferred: list[tuple[int, str]] = field(default_factory=list)  # (line, imported module) inside functions
    private: list[tuple[int, str]] = field(default_factory=list)  # (line, "module._name") taken from another module
    type_only: set[str] = field(default_factory=set)  # imported under ``if TYPE_CHECKING:`` only

    def every_import(self) -> set[str]:
        """What the module imports at any level: when imported, in a function, or for type checking."""
        return self.imports | {target for _, target in self.deferred} | self.type_only


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Module]:
    return {module_name(p): Module(module_name(p), p, p.name == "__init__.py") for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return test is not None and "TYPE_CHECKING" in ast.unparse(test)


def base_of(node: ast.ImportFrom, module: Module) -> str:
    """The module a ``from ... import`` statement names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def targets(node: ast.Import | ast.ImportFrom, module: Module, known: set[str]
            ) -> list[tuple[str, str | None, str | None]]:
    """One import statement as (imported module, name taken from it, local name bound to the module). zoo
    modules go by their full name, other packages by their top-level name."""
    out: list[tuple[str, str | None, str | None]] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in known:
                out.append((alias.name, None, alias.asname))
            else:
                out.append((alias.name.split(".")[0], None, None))
        return out
    base = base_of(node, module)
    for alias in node.names:
        if f"{base}.{alias.name}" in known:  # `from . import assemble`: the submodule
            out.append((f"{base}.{alias.name}", None, alias.asname or alias.name))
        elif base in known:
            out.append((base, alias.name, None))
        else:
            out.append((base.split(".")[0], alias.name, None))
    return out


def scan(module: Module, known: set[str]) -> None:
    tree = ast.parse(module.path.read_text(), str(module.path))
    bound: dict[str, str] = {}  # local name -> the zoo module it is bound to

    def record(node: ast.Import | ast.ImportFrom, deferred: bool) -> None:
        for target, name, local in targets(node, module, known):
            if local is not None:
                bound[local] = target
            if name and name.startswith("_") and not name.startswith("__") and target in known \
                    and target != module.name:
                module.private.append((node.lineno, f"{target}.{name}"))
            if target == module.name or module.name.startswith(target + "."):
                continue  # the module itself, or a package it is part of (initialized before it)
            if deferred:
                module.deferred.append((node.lineno, target))
            else:
                module.imports.add(target)

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                record(child, deferred)
            elif isinstance(child, ast.If) and is_type_checking(child):
                for sub in ast.walk(ast.Module(body=child.body, type_ignores=[])):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        module.type_only.update(t for t, _, _ in targets(sub, module, known) if t != module.name)
                for sub in child.orelse:
                    visit(ast.Module(body=[sub], type_ignores=[]), deferred)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True)
            else:
                visit(child, deferred)

    visit(tree, False)
    for node in ast.walk(tree):  # `extraction._helper` on an imported zoo module
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            module.private.append((node.lineno, f"{bound[node.value.id]}.{node.attr}"))


@pytest.fixture(scope="module")
def graph() -> dict[str, Module]:
    found = modules()
    for module in found.values():
        scan(module, set(found))
    return found


def heavy_modules(graph: dict[str, Module]) -> set[str]:
    """zoo modules that import a heavy package when they are imported (directly or through other zoo modules)."""
    heavy: set[str] = set()
    changed = True
    while changed:
        changed = False
        for module in graph.values():
            if module.name not in heavy and any(t in HEAVY or t in heavy for t in module.imports):
                heavy.add(module.name)
                changed = True
    return heavy


def cycles(graph: dict[str, Module]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(t for t in graph[name].imports if t in graph):
            if target not in index:
                connect(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            connect(name)
    return found


def test_the_scan_sees_imports(graph):
    # guards the checks below against a scan that finds nothing
    assert "zoo.genes" in graph["zoo.adapters"].imports and "zoo.errors" in graph["zoo.adapters"].imports
    assert "torch" in {t for _, t in graph["zoo.extraction"].deferred}
    assert {"zoo.registry.store", "sqlalchemy"} <= heavy_modules(graph) | HEAVY
    assert "zoo.genes" not in heavy_modules(graph)


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_cycle_detection_finds_a_cycle(graph):
    looped = {name: Module(name, m.path, m.is_package, set(m.imports)) for name, m in graph.items()}
    looped["zoo.genes"].imports.add("zoo.extraction")  # extraction imports genes
    assert any({"zoo.genes", "zoo.extraction"} <= set(c) for c in cycles(looped))


def test_no_private_names_across_modules(graph):
    offences = [f"{m.name}:{line} uses {name}" for m in graph.values() for line, name in m.private]
    assert offences == []


def test_deferred_imports_are_for_heavy_dependencies(graph):
    heavy = heavy_modules(graph)
    offences = []
    for module in graph.values():
        for line, target in module.deferred:
            if target in HEAVY or target in heavy or (module.name, target) in DEFERRED:
                continue
            kind = "zoo module" if target in graph else ("stdlib module" if target in sys.stdlib_module_names
                                                          else "light package")
            offences.append(f"{module.name}:{line} defers importing {target} ({kind}): import it at module level")
    assert offences == []


def test_deferred_exceptions_are_still_needed(graph):
    heavy = heavy_modules(graph)
    stale = [pair for pair in DEFERRED
             if pair[1] in heavy or pair[1] not in {target for _, target in graph[pair[0]].deferred}]
    assert stale == []


def test_no_module_is_named_like_a_public_function_of_the_package(graph):
    # importing a submodule binds it as an attribute of its package: a module zoo/materialize.py would turn
    # `zoo.materialize` (the API function, loaded lazily) into that module once anything imported it
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    public = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
    assert "materialize" in public and "catalog" in public
    submodules = {name.split(".")[1] for name in graph if name.count(".") >= 1}
    assert sorted(submodules & set(public)) == []


def test_only_the_cli_imports_the_api_facade(graph):
    # zoo.api holds the public functions; the helpers other modules share live in the modules they belong to
    # (zoo.inputs, zoo.resolver, ...), so the facade is never a toolbox
    importers = sorted(m.name for m in graph.values()
                       if "zoo.api" in m.imports | {target for _, target in m.deferred})
    assert importers == ["zoo.cli"]


def in_hf(name: str) -> bool:
    return name == HF or name.startswith(HF + ".")


def top_layer(name: str) -> int | None:
    """The index in ``TOP_LAYERS`` of the layer a module is in (0 the top), ``None`` below them."""
    for index, (_, members) in enumerate(TOP_LAYERS):
        if name in members or any(name.startswith(member + ".") for member in members if member != "zoo"):
            return index
    return None


def test_the_scan_sees_the_layers(graph):
    # guards the layering checks below against a scan that finds nothing, or a core module renamed away
    assert sorted(CORE - set(graph)) == []
    assert {"zoo.app.add", "zoo.app.build"} <= graph[FACADE].imports
    assert "zoo.hf.assemble" in graph["zoo.app.build"].imports and "zoo.registry" in graph["zoo.app.add"].imports
    assert [top_layer(n) for n in ("zoo.cli", "zoo", FACADE, "zoo.app.build", "zoo.registry", "zoo.hf")] \
        == [0, 1, 1, 2, None, None]
    assert "transformers" in {t for _, t in graph["zoo.hf.adapter"].deferred}
    assert "safetensors" in {t for _, t in graph["zoo.hf.safetensors_io"].deferred}
    assert "zoo.adapters" in graph["zoo.hookspecs"].type_only and "zoo.adapters" not in graph["zoo.hookspecs"].imports
    assert any(in_hf(t) for t in graph["zoo.api"].imports)


def test_the_core_never_imports_transformers_safetensors_or_zoo_hf(graph):
    offences = sorted(f"{name} imports {target}" for name in CORE for target in graph[name].every_import()
                      if target in HF_LIBRARIES or in_hf(target))
    assert offences == []


def test_the_core_imports_only_the_core(graph):
    # so nothing the core runs pulls zoo.hf in either (imports for type checking only are not run)
    offences = sorted(f"{name} imports {target}" for name in CORE
                      for target in graph[name].imports | {t for _, t in graph[name].deferred}
                      if target in graph and target not in CORE)
    assert offences == []


def test_zoo_hf_imports_only_the_core(graph):
    # zoo.hf sits directly on the core: the registry, the application layer and the plugins that import it are above
    offences = sorted(f"{name} imports {target}" for name in graph if in_hf(name)
                      for target in graph[name].every_import() if target in graph and not in_hf(target)
                      and target not in CORE)
    assert offences == []


def test_transformers_and_safetensors_are_used_through_zoo_hf(graph):
    used = {(name, target) for name in graph if not in_hf(name)
            for target in graph[name].every_import() if target in HF_LIBRARIES}
    assert sorted(used - set(HF_USERS)) == []  # a new direct use: go through zoo.hf, or list it with the reason
    assert sorted(set(HF_USERS) - used) == []  # an exception no longer needed


def test_the_top_layers_import_only_downwards(graph):
    # the application layer never imports the facade or the CLI; the facade never imports the CLI or the testing kit
    offences = []
    for name, module in graph.items():
        at = top_layer(name)
        for target in module.every_import():
            above = top_layer(target) if target in graph else None
            if above is not None and (at is None or above < at):
                where = TOP_LAYERS[at][0] if at is not None else "below them"
                offences.append(f"{name} ({where}) imports {target} ({TOP_LAYERS[above][0]})")
    assert sorted(offences) == []


def test_only_the_facade_imports_the_application_layer(graph):
    # the CLI and everything else reach zoo.app through zoo.api, so the facade is the application layer's one door
    importers = sorted({name for name, module in graph.items() if top_layer(name) != top_layer(APP)
                        for target in module.every_import() if target == APP or target.startswith(APP + ".")})
    assert importers == [FACADE]


def test_the_facade_defines_only_the_public_functions(graph):
    # zoo.api is a table of the public functions: the keyword forms it defines and the application layer's it
    # imports; it holds no helpers, classes or settings of its own
    tree = ast.parse(graph[FACADE].path.read_text())
    package = ast.parse((PACKAGE / "__init__.py").read_text())
    public = next(ast.literal_eval(node.value) for node in package.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
    lazy = next(ast.literal_eval(node.value) for node in package.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets))
    exported = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assigned = [ast.unparse(t) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    assert defined and sorted(set(defined) - set(public)) == []
    assert assigned == ["__all__"]
    assert sorted({name for name, module in lazy.items() if module == FACADE} - set(exported)) == []
