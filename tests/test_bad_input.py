"""docs/bad-input.md lists every refusal the code can answer, and nothing else.

The code is read, not run: in each part's modules, every error of the vocabulary
(`eventing/errors.py`) it constructs or lists in a table of refusals, every problem type
of its own (a table row `(ErrorClass, "slug", "Title")`, as link-identity's), every 500
it answers with `problem(500, None, …)`, and every field it names as a literal. The page's
tables, one section a part, must give exactly those (status, type) pairs, the status
`eventing/edge.STATUS` gives, the broker's retry rule (`broker/delivery.py`), and
mention every literal field.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.delivery import Outcome
from eventing import errors
from eventing.edge import STATUS

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "bad-input.md"
VOCABULARY: Mapping[str, type[errors.EventworksError]] = {
    name: value for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.EventworksError)}
EDGE = ("eventing/wire.py", "eventing/edge.py", "eventing/auth.py", "eventing/callers.py",
        "eventing/inbox.py", "eventing/database.py")
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "function").is_dir())
# Each part of the page (its `## ` heading) → the modules whose refusals it answers.
PARTS: Mapping[str, tuple[str, ...]] = {
    "The function edge": EDGE,
    "Broker ingress": ("broker/ingress.py", "broker/admission.py", "broker/webhook.py",
                       "eventing/wire.py", "eventing/auth.py"),
    "Gateway": ("broker/gateway.py", "gateway/**/*.py"),
    "Signing page server": ("stack/signing_page.py",),
    **{name: (f"functions/{name}/function/*.py",) for name in FUNCTIONS},
}
# A part that answers another part's refusals as its own: the gateway admits with the
# ingress's code, and the local signing-page server is the gateway without tokens.
SAME_AS: Mapping[str, str] = {"Gateway": "Broker ingress", "Signing page server": "Gateway"}


@dataclass(frozen=True, order=True)
class Refusal:
    status: int
    type: str


@dataclass(frozen=True)
class Row:
    refusal: Refusal
    retried: str


def status_of(error: type[errors.EventworksError]) -> int:
    return next(STATUS[c] for c in error.__mro__ if c in STATUS)


def _literal(node: ast.expr | None, constants: Mapping[str, str]) -> str | None:
    """A string the code spells out: a constant, or an f-string of module constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if not (isinstance(part.value, ast.Name) and part.value.id in constants):
                    return None
                parts.append(constants[part.value.id])
            else:
                parts.append(_literal(part, constants) or "")
        return "".join(parts)
    return None


def _error_class(node: ast.expr) -> type[errors.EventworksError] | None:
    return VOCABULARY.get(node.id) if isinstance(node, ast.Name) else None


def read(source: str) -> tuple[set[Refusal], set[str]]:
    """What one module can refuse, and the fields it names literally."""
    tree = ast.parse(source)
    constants = {target.id: node.value.value for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                 and isinstance(node.value.value, str)
                 for target in node.targets if isinstance(target, ast.Name)}
    refusals: set[Refusal] = set()
    fields: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (error := _error_class(node.func)) is not None:
            refusals.add(Refusal(status_of(error), error.slug))
            field = next((k.value for k in node.keywords if k.arg == "field"), None)
            if (name := _literal(field, constants)) is not None:
                fields.add(name)
        elif isinstance(node, ast.Call) and len(node.args) >= 2 \
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "problem" \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int) \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value is None:
            refusals.add(Refusal(node.args[0].value, "internal"))
        elif isinstance(node, ast.Dict):  # {401: Unauthorized, 403: Forbidden}
            refusals |= {Refusal(status_of(e), e.slug) for v in node.values
                         if (e := _error_class(v)) is not None}
        elif isinstance(node, ast.Tuple) and len(node.elts) >= 2 \
                and (error := _error_class(node.elts[0])) is not None \
                and (slug := _literal(node.elts[1], constants)) is not None:
            refusals.add(Refusal(status_of(error), slug))  # a problem type of its own
    return refusals, fields


def in_code(part: str) -> tuple[set[Refusal], set[str]]:
    refusals: set[Refusal] = set()
    fields: set[str] = set()
    for pattern in PARTS[part]:
        for path in sorted(ROOT.glob(pattern)):
            found, named = read(path.read_text())
            refusals |= found
            fields |= named
    return refusals, fields


def sections() -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in re.split(r"^## ", PAGE.read_text(), flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        found[heading.strip()] = body
    return found


def rows(section: str) -> list[Row]:
    found = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0].isdigit():
            found.append(Row(Refusal(int(cells[0]), cells[1].strip("`")), cells[-1]))
    return found


def documented(part: str) -> set[Refusal]:
    return {row.refusal for row in rows(sections()[part])}


@pytest.mark.parametrize("part", sorted(PARTS))
def test_given_a_part_when_its_code_is_read_then_the_page_lists_exactly_what_it_refuses(part):
    code, _ = in_code(part)
    listed = documented(part)
    if part in SAME_AS:
        assert code - listed - documented(SAME_AS[part]) == set(), \
            f"{part} answers refusals the page does not list"
        assert listed - code == set(), f"the page lists what {part} no longer answers"
        return
    assert sorted(code - listed) == [], f"docs/bad-input.md misses refusals of {part}"
    assert sorted(listed - code) == [], f"docs/bad-input.md lists what {part} cannot answer"


@pytest.mark.parametrize("part", sorted(PARTS))
def test_given_a_part_when_its_code_names_a_field_then_the_page_names_it(part):
    _, fields = in_code(part)
    section = sections()[part]
    assert sorted(f for f in fields if f"`{f}`" not in section) == []


def test_given_each_row_when_its_status_is_read_then_retried_is_what_the_broker_does():
    for part, section in sections().items():
        for row in rows(section):
            retried = "yes" if Outcome(status=row.refusal.status).retryable else "no"
            assert row.retried == retried, f"{part}: {row}"


def test_given_the_vocabulary_when_each_error_is_read_then_the_page_lists_it_at_its_status():
    listed = {row.refusal for section in sections().values() for row in rows(section)}
    for error in VOCABULARY.values():
        if error is not errors.EventworksError:
            assert Refusal(status_of(error), error.slug) in listed, error.__name__


def test_given_the_page_when_its_parts_are_read_then_each_part_has_one_section():
    assert set(PARTS) <= set(sections()), "a part without its section"
    assert set(sections()) <= set(PARTS), "a section the test does not hold to any code"


def test_given_the_readmes_when_read_then_each_links_the_page_in_one_hop():
    readmes: Iterable[Path] = [ROOT / "README.md",
                               *(ROOT / "functions" / name / "README.md" for name in FUNCTIONS)]
    for readme in readmes:
        assert "docs/bad-input.md" in readme.read_text(), readme


def test_given_a_module_when_read_then_constructed_tabled_and_own_problem_types_are_found():
    # The reader itself: each shape of refusal the code uses is seen.
    source = '''
HEADER = "X-Thing"
TABLE = {401: Unauthorized}
OWN = (Forbidden, "nonce-used", "Nonce already used")
def f(name):
    raise Conflict("x", field="data.version")
    raise InvalidEvent("y", field=f"header {HEADER}")
    raise InvalidEvent("z", field=f"data.{name}")
    isinstance(name, Unavailable)
    return wire.problem(500, None, event_id=None)
'''
    refusals, fields = read(source)
    assert refusals == {Refusal(401, "unauthorized"), Refusal(403, "nonce-used"),
                        Refusal(409, "conflict"), Refusal(400, "invalid-event"),
                        Refusal(500, "internal")}
    assert fields == {"data.version", "header X-Thing"}
