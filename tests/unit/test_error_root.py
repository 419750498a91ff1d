"""One error root (docs/architecture.md): every exception class of the application is a ChronosError,
so the CLI and the API map it in one place (exit code, HTTP status, message) and no expected failure
reaches a user as a traceback. Read from the source, so a new exception class cannot slip past."""

from __future__ import annotations

import ast
import builtins

from tests.unit.test_layers import FIRST_PARTY, ROOT

BUILTIN_EXCEPTIONS = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}

# Not errors a user meets: outcomes and signals caught where they are raised.
NOT_USER_ERRORS = {
    # a document's failure, turned into a ConversionFailed event by the convert stage; also raised in
    # the Modal container, which ships app/convert without the event store
    "app/convert/errors.py:ConversionFailure",
    "app/convert/recovery.py:_BudgetSpent",  # a ConversionFailure: the document's converter budget is spent
    "app/pipeline/stages.py:StageFailure",  # a stage's final failure, turned into a failure event
    "app/convert/guards.py:_TooDeep",  # the HTML nesting walk stops early
    "app/convert/local.py:Cancelled",  # a cancelled conversion (superseded revision, shutdown)
    "app/pipeline/worker.py:_LeaseLost",  # the job's lease was taken over: stop working on it
}


def exception_classes() -> dict[str, list[str]]:
    """``file:Class`` → its base names, for every class of the first-party packages."""
    classes: dict[str, list[str]] = {}
    for package in FIRST_PARTY:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ClassDef):
                    bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                    classes[f"{path.relative_to(ROOT)}:{node.name}"] = bases
    return classes


def test_every_exception_class_is_under_the_one_root() -> None:
    classes = exception_classes()
    by_name = {key.split(":")[1]: bases for key, bases in classes.items()}

    def rooted(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "ChronosError":
            return True
        return name not in seen and any(rooted(b, seen | {name}) for b in by_name.get(name, []))

    def is_exception(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in BUILTIN_EXCEPTIONS:
            return True
        return name not in seen and any(is_exception(b, seen | {name}) for b in by_name.get(name, []))

    exceptions = {key for key in classes if is_exception(key.split(":")[1])}
    assert "events/errors.py:ChronosError" in exceptions  # the walk finds the root itself
    assert "app/errors.py:OverBudget" in exceptions
    strays = sorted(k for k in exceptions if not rooted(k.split(":")[1]) and k not in NOT_USER_ERRORS)
    assert strays == [], f"exception classes outside ChronosError (give each a kind from app/errors.py): {strays}"
    gone = sorted(NOT_USER_ERRORS - exceptions)
    assert gone == [], f"listed as not user errors but no longer exception classes: {gone}"
