"""The package's shape: imports flow one way, and no module uses another's privates."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "smtpd_lite"


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted):
    path = PACKAGE.parent / dotted.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports():
    """{module: (modules it imports, {local name: module}, names imported from modules)}."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        modules, aliases, names = set(), {}, []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = ".".join(package[:len(package) - node.level + 1]
                            + ([node.module] if node.module else []))
            for alias in node.names:
                dotted = base + "." + alias.name
                if _is_module(dotted):
                    modules.add(dotted)
                    aliases[alias.asname or alias.name] = dotted
                else:
                    modules.add(base)
                    names.append((base, alias.name))
        found[name] = (modules - {name}, aliases, names)
    return found


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            cycle = visit(imported) if imported in graph else None
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_import_cycle_inside_the_package():
    graph = {name: modules for name, (modules, _, _) in _imports().items()}
    assert _cycle(graph) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_session_knows_a_context_never_the_server():
    imports = _imports()
    for module in ("session", "lmtp", "auth_command", "content", "context", "envelope",
                   "extensions", "connection"):
        assert "smtpd_lite.server" not in imports["smtpd_lite." + module][0], module


def test_no_module_reads_another_module_s_private_names():
    readings, imports = [], _imports()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        _, aliases, names = imports[name]
        readings += ["%s: from %s import %s" % (name, base, imported) for base, imported in names
                     if imported.startswith("_") and not imported.startswith("__")]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                readings.append("%s: %s.%s" % (name, aliases[node.value.id], node.attr))
    assert readings == []
