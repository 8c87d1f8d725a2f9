"""The rules of dependency of ARCHITECTURE.md, read from the source with ast: every import of
every module of portal_service (function-local and TYPE_CHECKING ones included)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import portal_service

PACKAGE_DIR = Path(portal_service.__file__).parent

# Only these may import the entry points (portal/demo.py, which runs the whole app
# in-process, is handed main.create_app by cli.py).
ENTRY_POINTS = {"portal_service.cli", "portal_service.main"}

# The bottom layer: plain settings, the database plumbing, the error types.
BASE = {"portal_service.config", "portal_service.db", "portal_service.errors"}
DOMAIN = ("access", "auth", "commands", "gateway", "mirror", "notify", "ops", "portal")

# The mirror's pure modules: the watermark rule, the registry of kinds, the parsing of a
# body, the rows built outside the ordered path and reconcile's comparisons decide without a
# session or Stripe, so they import only these (and no SQL session code: `uses_a_session`).
# The inbox knows event rows, not the objects they carry.
PURE = {
    "portal_service.mirror.ordering",
    "portal_service.mirror.projections",
    "portal_service.mirror.events",
    "portal_service.mirror.rows",
    "portal_service.mirror.drift",
}
PURE_MAY_IMPORT = PURE | {
    "portal_service.config",
    "portal_service.errors",
    "portal_service.gateway.base",
    "portal_service.mirror.signatures",
    "portal_service.mirror.stripe_models",
    "portal_service.mirror.tables",
}
INBOX = "portal_service.mirror.inbox"
INBOX_MAY_NOT_IMPORT = ("gateway", "mirror.apply", "mirror.ties", "mirror.intake")

# Wrong-way imports that remain, each with what it is waiting for. The test fails when one
# disappears too, so the list only shrinks. None remain: the stand-in's portal is handed its
# rules by the portal page (portal/offline_rules.py) instead of importing access/ and mirror/.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    target: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    base = PACKAGE_DIR / relative
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(source: str, importer: str) -> list[Import]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                Import(importer, alias.name, (), node.lineno)
                for alias in node.names
                if alias.name.split(".")[0] == "portal_service"
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "portal_service":
                continue
            names = tuple(alias.name for alias in node.names)
            # `from portal_service.mirror import tables` imports the module mirror.tables.
            submodules = [name for name in names if is_module(f"{node.module}.{name}")]
            found += [
                Import(importer, f"{node.module}.{name}", (), node.lineno) for name in submodules
            ]
            rest = tuple(name for name in names if name not in submodules)
            if rest or not submodules:
                found.append(Import(importer, node.module, rest, node.lineno))
    return found


def all_imports() -> list[Import]:
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        found += imports_of(path.read_text(encoding="utf-8"), module_name(path))
    return found


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def within(module: str, *packages: str) -> bool:
    return any(
        module == f"portal_service.{p}" or module.startswith(f"portal_service.{p}.")
        for p in packages
    )


def violations(imports: list[Import]) -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for imp in imports:
        source, target = imp.importer, imp.target
        if target in ENTRY_POINTS and source not in ENTRY_POINTS:
            found.add(("entry point", source, target))
        if source in BASE and within(target, *DOMAIN):
            found.add(("base imports a domain package", source, target))
        if within(source, "gateway") and within(target, "mirror", "portal", "access", "notify"):
            found.add(("gateway imports a layer above it", source, target))
        if within(source, "mirror") and within(target, "portal", "access", "notify"):
            found.add(("mirror imports a reader of it", source, target))
        if source in PURE and target not in PURE_MAY_IMPORT:
            found.add(("pure module imports a session or Stripe", source, target))
        if source == INBOX and within(target, *INBOX_MAY_NOT_IMPORT):
            found.add(("the inbox imports the objects' writes or Stripe", source, target))
        private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if private and subpackage(source) != subpackage(target):
            found.add(("private name of another package", source, f"{target}.{private[0]}"))
    return found


def uses_a_session(module: str) -> bool:
    """Whether a module imports SQLAlchemy's session or connection code."""
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:]).with_suffix(".py")
    return uses_a_session_in(path.read_text(encoding="utf-8"))


def uses_a_session_in(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        if any(
            n.startswith(("sqlalchemy.ext.asyncio", "sqlalchemy.orm", "asyncpg")) for n in names
        ):
            return True
    return False


def offline_isinstance_checks() -> list[str]:
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = module_name(path)
        if within(module, "gateway"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and len(node.args) == 2
                and "OfflineGateway" in ast.unparse(node.args[1])
            ):
                found.append(f"{module}:{node.lineno}")
    return found


class TestRulesOfDependency:
    def test_no_module_imports_against_the_rules(self) -> None:
        found = violations(all_imports())
        unexpected = sorted(v for v in found if (v[1], v[2]) not in KNOWN_EXCEPTIONS)
        assert unexpected == []

    def test_every_known_exception_is_still_needed(self) -> None:
        found = {(source, target) for _rule, source, target in violations(all_imports())}
        assert sorted(KNOWN_EXCEPTIONS - found) == []

    def test_the_pure_mirror_modules_open_no_session(self) -> None:
        assert sorted(module for module in PURE if uses_a_session(module)) == []

    def test_callers_ask_the_gateway_for_its_stand_in_instead_of_its_class(self) -> None:
        assert offline_isinstance_checks() == []


class TestTheCheckerItself:
    """The rules above would pass on a checker that reads nothing: these show it can fail."""

    @pytest.mark.parametrize(
        ("importer", "source", "rule"),
        [
            ("portal_service.mirror.sync_cli", "from portal_service.cli import app", "entry point"),
            ("portal_service.mirror.x", "import portal_service.main", "entry point"),
            (
                "portal_service.config",
                "def f():\n    from portal_service.portal import configs",
                "base imports a domain package",
            ),
            (
                "portal_service.gateway.stripe",
                "from portal_service.mirror.stripe_models import to_jsonable",
                "gateway imports a layer above it",
            ),
            (
                "portal_service.mirror.apply",
                "from portal_service.access.facts import linked_customer",
                "mirror imports a reader of it",
            ),
            (
                "portal_service.portal.flows",
                "from portal_service.access.facts import _linked",
                "private name of another package",
            ),
            (
                "portal_service.mirror.ordering",
                "from portal_service.mirror.apply import watermark",
                "pure module imports a session or Stripe",
            ),
            (
                "portal_service.mirror.inbox",
                "from portal_service.gateway import Gateway",
                "the inbox imports the objects' writes or Stripe",
            ),
        ],
    )
    def test_a_forbidden_import_is_reported(self, importer: str, source: str, rule: str) -> None:
        assert rule in {v[0] for v in violations(imports_of(source, importer))}

    def test_allowed_imports_are_not_reported(self) -> None:
        source = (
            "from portal_service.mirror import tables\n"
            "from portal_service.gateway import Gateway\n"
            "from portal_service.portal.configs import _app_portal_config\n"
        )
        assert violations(imports_of(source, "portal_service.portal.sessions")) == set()

    def test_session_code_is_recognised(self) -> None:
        assert uses_a_session_in("from sqlalchemy.ext.asyncio import AsyncSession")
        assert not uses_a_session_in("from sqlalchemy import Table, select")

    def test_a_submodule_import_resolves_to_the_module(self) -> None:
        found = imports_of("from portal_service.mirror import tables", "portal_service.x")
        assert [imp.target for imp in found] == ["portal_service.mirror.tables"]
