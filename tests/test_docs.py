"""Docs the tests keep honest: every detection is in the catalog document,
every family, module and command in the architecture document, and the README's two commands exist."""

from __future__ import annotations

import ast
import shutil
import subprocess
import tempfile
from pathlib import Path

from ktriage.detect.rules import builtin_rules
from ktriage.model.families import FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def test_every_detection_is_documented() -> None:
    text = (ROOT / "docs" / "DETECTIONS.md").read_text()
    missing = [n for r in builtin_rules() for n in r.names() if f"`{n}`" not in text]
    assert missing == []


def test_architecture_names_every_family_source_file_and_command() -> None:
    from ktriage.cli import COMMANDS, _parser

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert [f for f in FAMILIES if f not in text] == []
    package = ROOT / "src" / "ktriage"
    missing = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py")) if p.name != "__init__.py"
               and f"src/ktriage/{p.relative_to(package)}" not in text
               and not (f"`src/ktriage/{p.parent.relative_to(package)}/`" in text and f"`{p.name}`" in text)]
    assert missing == [], "each module in its own row, or named in its folder's row"
    assert [c for c in COMMANDS if f"`ktriage {c}`" not in text] == []
    assert [c for c in COMMANDS if not (package / "commands" / f"{c}.py").is_file()] == [], "a module per verb"
    verbs = next(a for a in _parser()._actions if a.dest == "verb").choices
    assert sorted(verbs) == sorted(COMMANDS), "every verb of the parser runs in commands/"


def test_readme_has_the_two_setup_commands_ci_uses() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "\n    scripts/setup && scripts/ktriage record --db ktriage.db\n" in readme
    assert "\n    scripts/test\n" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/setup" in ci and "scripts/test" in ci


def test_readme_commands_run_as_root_and_ask_sudo_otherwise(root: None) -> None:
    ran = subprocess.run([str(ROOT / "scripts" / "ktriage"), "--version"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.startswith("ktriage "), ran.stderr
    tools = Path(tempfile.mkdtemp(prefix="ktriage-nosudo-"))  # what the scripts use, and no sudo
    tools.chmod(0o755)  # reachable by the unprivileged user
    for tool in ("bash", "id", "basename", "dirname"):
        (tools / tool).symlink_to(shutil.which(tool))
    refused = subprocess.run([shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
                              "/bin/bash", str(ROOT / "scripts" / "ktriage"), "--version"],
                             capture_output=True, text=True, env={"PATH": str(tools)})
    shutil.rmtree(tools)
    assert refused.returncode == 1 and "needs root, and there is no sudo here" in refused.stderr, refused.stderr


def test_no_two_classes_share_a_name() -> None:
    from collections import defaultdict

    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted((ROOT / "src" / "ktriage").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(ROOT)))
    assert {name: files for name, files in where.items() if len(files) > 1} == {}


def _module_imports(path: Path, package: Path) -> set[str]:
    """The ktriage modules path imports at module level (inside `if TYPE_CHECKING:` too; not in functions)."""
    found: set[str] = set()

    def walk(nodes: list) -> None:
        for node in nodes:
            if isinstance(node, ast.If):
                walk(node.body + node.orelse)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ktriage."):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names
                             if (package.parent / Path(*node.module.split("."), f"{a.name}.py")).exists())
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("ktriage."))

    walk(ast.parse(path.read_text()).body)
    return found


def test_no_import_cycle_between_modules() -> None:
    package = ROOT / "src" / "ktriage"
    graph = {".".join(("ktriage", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"):
             _module_imports(p, package) for p in package.rglob("*.py")}
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, set()) - {module}):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                done.add(dep)
                visit(dep, path + [dep])

    for module in sorted(graph):
        if module not in done:
            done.add(module)
            visit(module, [module])
    assert cycles == []
