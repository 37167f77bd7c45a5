"""The tree shows the layers: no module imports from a layer above its own."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "mcu_emul"
# bottom to top; a module may import from its own layer and the layers below
LAYERS = ["base", "numerics", "models", "hardware", "comm", "files", "chip", "commands", "entry"]
TOP = {"_version": "base", "errors": "base", "fields": "base", "config": "base", "tomltext": "base", "presets": "base",
       "cluster": "base",
       "chip": "chip", "runspec": "chip", "dryrun": "chip", "pipeline": "chip", "api": "commands", "planner": "commands",
       "__main__": "entry", "__init__": "entry", "testing": "entry"}


def layer_of(parts: tuple) -> str:
    """('numerics', 'quant') -> 'numerics'; ('config',) -> 'base'."""
    return parts[0] if parts[0] in LAYERS and parts[0] not in TOP else TOP[parts[0]]


def imports(path: Path):
    """(line, imported module as a tuple of package parts) for every import inside mcu_emul."""
    here = path.relative_to(PKG).with_suffix("").parts
    pkg = here[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - (node.level - 1)]
            mod = tuple(node.module.split(".")) if node.module else ()
            if mod:
                yield node.lineno, base + mod
            else:
                for a in node.names:
                    yield node.lineno, base + (a.name,)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mcu_emul"):
            yield node.lineno, tuple(node.module.split("."))[1:] or (node.names[0].name,)


def test_no_upward_imports():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG).with_suffix("").parts
        mine = layer_of(parts)
        for line, mod in imports(path):
            theirs = layer_of(mod)
            if LAYERS.index(theirs) > LAYERS.index(mine):
                bad.append(f"{path.relative_to(PKG)}:{line} ({mine}) imports {'.'.join(mod)} ({theirs})")
    assert not bad, "\n".join(bad)


def test_only_transport_and_entry_import_mpi4py():
    users = sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if "from mpi4py" in p.read_text()
                   or "import mpi4py" in p.read_text())
    assert users == ["__main__.py", "comm/transport.py"], users
