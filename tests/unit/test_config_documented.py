"""The configuration reference says what the config model takes: every key a user can write is
in a key table of the docs, every key the docs name exists, and every default a key table
states is the model's.

A key table is a markdown table whose columns are `key | default | meaning`, under a heading
whose first backticked key path names the block its rows belong to (`### \\`quota.redis\\``,
`## \\`issuers[]\\``, `### \\`quota.plans.<name>\\``). A row lists one or more keys (`a` / `b`,
`a` or `b`), relative to that block; a later key without a dot takes the first one's prefix
(`jwks.min_ttl` / `max_ttl`). A block type used in several places (a limit, TLS files, an
endpoint rule) is documented once: its keys then count for every place the docs name it."""

from __future__ import annotations

import contextlib
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from tenantgate.config.model import Config
from tenantgate.config.types import Secret

DOCS = Path(__file__).resolve().parents[2] / "docs"
REFERENCE = ("configuration.md", "quota.md", "api-keys.md", "signed-context.md", "postgres.md")


@dataclass(frozen=True)
class Step:
    """One key of a path: the block (model) that takes it, and the key as written in YAML."""

    owner: type[BaseModel]
    key: str


class UnknownKey(LookupError):
    pass


def _bare(annotation: Any) -> Any:
    """The type without Annotated metadata and without `| None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            (annotation,) = (a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def _keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A block's keys as a user writes them: the alias where a field has one (fromEnv)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _is_block(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _shape(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """What a value of this type adds to a path (`[]` per list, `.*` per mapping) and the block
    it holds, if any. A secret reference is a value: its two keys are documented once."""
    bare = _bare(annotation)
    if get_origin(bare) is list:
        suffix, block = _shape(get_args(bare)[0])
        return "[]" + suffix, block
    if get_origin(bare) is dict:
        suffix, block = _shape(get_args(bare)[1])
        return ".*" + suffix, block
    return "", bare if _is_block(bare) and bare is not Secret else None


def model_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, Step]]:
    """Every key path a user can write (`quota.plans.*.limits[].rate`), with its last step."""
    for key, field in _keys(model).items():
        yield prefix + key, Step(model, key)
        suffix, block = _shape(field.annotation)
        if block is not None:
            yield from model_keys(block, f"{prefix}{key}{suffix}.")


def resolve(path: str) -> list[Step]:
    """The keys a path as the docs write it passes through (`quota.plans.<name>.limits[0]`,
    `issuers[].jwks.url`, `context.*`); UnknownKey at the first segment the model refuses."""
    steps: list[Step] = []
    current: Any = Config
    for token in re.findall(r"\[\d*\]|[^.\[\]]+", path):
        bare = _bare(current)
        if token.startswith("["):
            if get_origin(bare) is not list:
                raise UnknownKey(f"{path}: {token} follows a value that is not a list")
            current = get_args(bare)[0]
        elif get_origin(bare) is dict:  # any name is a key of a mapping: a plan, a tenant id
            current = get_args(bare)[1]
        elif _is_block(bare) and token == "*":  # every key of the block
            return steps
        elif _is_block(bare):
            if token not in _keys(bare):
                raise UnknownKey(f"{path}: {bare.__name__} takes no key {token!r}")
            steps.append(Step(bare, token))
            current = _keys(bare)[token].annotation
        elif bare is object:  # inside a free-form value (jwks.inline's JWK Set)
            return steps
        elif get_origin(bare) is list:
            raise UnknownKey(f"{path}: {token!r} follows a list (write [] for its items)")
        else:
            raise UnknownKey(f"{path}: {token!r} follows a value that takes no keys")
    return steps


def _field(step: Step) -> FieldInfo:
    return _keys(step.owner)[step.key]


# Documents -------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(\w*)")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_TOPS = "|".join(map(re.escape, _keys(Config)))
# A backticked key path that starts at the top of the config, maybe followed by a value or a
# message (`admin.listen: unix:PATH`, `listen.health HOST:PORT: ...`).
KEY_PATH = re.compile(rf"`((?:{_TOPS})(?:\[\d*\]|\.[^`\s:.\[\]]+)*)(?:[:\s][^`]*)?`")


@dataclass(frozen=True)
class Row:
    where: str  # doc:line
    block: str  # the heading's key path
    keys: tuple[str, ...]  # as the key cell writes them, relative to the block
    default: str


def prose_lines(doc: str) -> Iterator[tuple[int, str]]:
    """The lines of a document outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate((DOCS / doc).read_text().splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def yaml_blocks(doc: str) -> Iterator[tuple[int, Any]]:
    """The fenced ```yaml blocks of a document, parsed, with the line each starts on."""
    lines = (DOCS / doc).read_text().splitlines()
    start: int | None = None
    for number, line in enumerate(lines, 1):
        if (fence := _FENCE.match(line)) and start is None:
            start = number if fence.group(1) == "yaml" else -number
        elif fence:
            if start > 0:
                yield start, yaml.safe_load("\n".join(lines[start:number - 1]))
            start = None


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def key_tables(doc: str) -> Iterator[Row]:
    """The rows of the key tables of a document, each with the block its heading names."""
    lines = list(prose_lines(doc))
    block = None
    for i, (number, line) in enumerate(lines):
        if heading := _HEADING.match(line):
            block = next(iter(KEY_PATH.findall(heading.group(1))), None)
        is_header = (line.startswith("|") and i + 1 < len(lines)
                     and re.fullmatch(r"\|(\s*-+\s*\|)+", lines[i + 1][1]))
        if not is_header or _cells(line)[0] != "key":
            continue
        where = f"{doc}:{number}"
        assert _cells(line) == ["key", "default", "meaning"], f"{where}: a key table's columns"
        assert block is not None, f"{where}: a key table needs a heading naming its block"
        for number, row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            key_cell, default, _ = _cells(row)
            yield Row(f"{doc}:{number}", block, _key_cell(f"{doc}:{number}", key_cell), default)


def _key_cell(where: str, cell: str) -> tuple[str, ...]:
    keys = re.findall(r"`([^`]+)`", cell)
    assert keys and re.fullmatch(r"`[^`]+`(?:(?: / | or )`[^`]+`)*", cell), (
        f"{where}: a key cell lists backticked keys separated by ' / ' or ' or ': {cell}")
    prefix = keys[0].rpartition(".")[0]
    return tuple(k if "." in k or not prefix else f"{prefix}.{k}" for k in keys)


def all_rows() -> list[Row]:
    return [row for doc in REFERENCE for row in key_tables(doc)]


def _row_steps(row: Row) -> Iterator[tuple[int, str, list[Step]]]:
    """Each key of the row the model takes (test_every_key_the_docs_name_exists reports the
    others): its index, its path and the steps it takes from the table's block (a row of
    `circuit.failures` documents the `circuit` block too)."""
    for i, key in enumerate(row.keys):
        try:
            yield i, f"{row.block}.{key}", resolve(f"{row.block}.{key}")[len(resolve(row.block)):]
        except UnknownKey:
            continue


def _yaml_paths(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield prefix + str(key)
            yield from _yaml_paths(inner, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            yield from _yaml_paths(item, prefix[:-1] + "[].")


# Tests -----------------------------------------------------------------------------------

def test_every_key_a_config_takes_is_in_a_key_table() -> None:
    documented = {step for row in all_rows() for *_, steps in _row_steps(row) for step in steps}
    for doc in REFERENCE:  # a heading documents the block it names (`## \`audit\``)
        headings = [h.group(1) for _, line in prose_lines(doc) if (h := _HEADING.match(line))]
        for path in (path for heading in headings for path in KEY_PATH.findall(heading)):
            with contextlib.suppress(UnknownKey):  # test_every_key_the_docs_name_exists says so
                documented.add(resolve(path)[-1])
    paths = list(model_keys())
    assert len(paths) >= 140
    assert [path for path, step in paths if step not in documented] == []


def test_secret_references_are_documented_with_their_keys() -> None:
    text = (DOCS / "configuration.md").read_text()
    assert sorted(_keys(Secret)) == ["fromEnv", "fromFile"]
    for key in _keys(Secret):
        assert re.search(rf"`\{{{key}: [A-Z]+\}}`", text), key


def test_every_key_the_docs_name_exists() -> None:
    unknown = []
    for doc in REFERENCE:
        named = [(f"{doc}:{n}", p) for n, line in prose_lines(doc) for p in KEY_PATH.findall(line)]
        for start, block in yaml_blocks(doc):
            if isinstance(block, dict) and set(block) & set(_keys(Config)):
                named += [(f"{doc}:{start}", path) for path in _yaml_paths(block)]
        for where, path in named:
            try:
                resolve(path)
            except UnknownKey as exc:
                unknown.append(f"{where}: {exc}")
    for row in all_rows():
        for key in row.keys:
            try:
                resolve(f"{row.block}.{key}")
            except UnknownKey as exc:
                unknown.append(f"{row.where}: {exc}")
    assert unknown == []


REQUIRED = object()
_NONE = re.compile(r"(?:none|unlimited)(?:\s*\(.*\)|:.*)?")
_VALUES = re.compile(r"(`[^`]+`)((?: / |, )`[^`]+`)*(?:\s*\([^()]*\))?")


def documented_values(row: Row) -> list[object] | None:
    """What the default cell says of each key of the row, or None when it is prose: `required`,
    None for `none` / `unlimited`, else the backticked text (one per key, separated by ' / ';
    a list's items, separated by ', ')."""
    cell = row.default
    if cell == "required":
        return [REQUIRED] * len(row.keys)
    if _NONE.fullmatch(cell):
        return [None] * len(row.keys)
    if not _VALUES.fullmatch(cell):
        return None
    values = re.findall(r"`([^`]+)`", cell)
    if "`, `" in cell:
        return [values] if len(row.keys) == 1 else None
    return list(values) if len(values) == len(row.keys) else None


def _as_model_reads(text: object, field: FieldInfo) -> object:
    """The default cell's text as the model reads it: `30s` is 30.0, `64KiB` 65536."""
    if text is REQUIRED or text is None:
        return text
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)
    default = field.get_default(call_default_factory=True)
    return adapter.validate_python(text if isinstance(text, list) or isinstance(default, str)
                                   else yaml.safe_load(str(text)))


def test_every_default_a_key_table_states_is_the_models() -> None:
    compared, wrong = 0, []
    for row in all_rows():
        values = documented_values(row)
        for i, path, steps in _row_steps(row):
            field = _field(steps[-1])
            if values is None:
                # Prose is fine for a block (its own keys' rows state their defaults); a
                # value's default is stated as one.
                assert _shape(field.annotation)[1] is not None, (
                    f"{row.where}: {path}: state the default as `value`, none or required")
                continue
            model = REQUIRED if field.is_required() else field.get_default(
                call_default_factory=True)
            try:
                documented: object = _as_model_reads(values[i], field)
            except ValidationError:
                documented = "a value the model refuses"
            if documented != model:
                wrong.append(f"{row.where}: {path}: the docs say {values[i]!r}, the model "
                             f"{model!r}")
            compared += 1
    assert wrong == []
    assert compared >= 100


@pytest.mark.parametrize("cell, expected", [
    ("`10s`", ["10s"]),
    ("`-` (stdout)", ["-"]),
    ("none", [None]),
    ("none: the plan's", [None]),
    ("`x-tenant-plan`, `x-tenant-scopes`", [["x-tenant-plan", "x-tenant-scopes"]]),
    ("`true` when the registry is empty, else `false`", None),
])
def test_default_cells_are_read_as_written(cell: str, expected: list[object] | None) -> None:
    assert documented_values(Row("doc:1", "listen", ("grpc",), cell)) == expected
