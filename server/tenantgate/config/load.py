"""YAML file to `Config`, or `ConfigError` whose every issue names its key path."""

from __future__ import annotations

import difflib
import json
import logging
import os
import stat
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tenantgate.config.files import UnfitFile, read_jwks_file, read_pipe, read_regular_file
from tenantgate.config.model import Config
from tenantgate.errors import ConfigError

log = logging.getLogger("tenantgate.config")

# Where a config's warnings go (what loads but is likely a mistake): serve and a reload log
# them; check-config collects them and prints each as `FILE: warning: ...`.
Warn = Callable[[str], object]


def log_warning(message: str) -> None:
    log.warning("%s", message)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one, and
    reads every key as the text written: a tenant `0123` is "0123", not the octal 83, and `yes`
    is "yes", not True. Aliases (`*name`) are refused: these files have no use for them, and
    each one repeats a whole value, so a few hundred bytes of nested aliases expand into
    gigabytes (a "billion laughs" file) before any check can look at the result."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if isinstance(index, yaml.ScalarNode) and index.tag == _MERGE_TAG:
            raise _merge_key_error(index)  # `<<: *base`: name the merge key, not its alias
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed: write the value "
                "out", event.start_mark)
        return super().compose_node(parent, index)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _merge_key_error(node: yaml.Node) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        None, None, "merge keys (<<) are not supported: write the keys out", node.start_mark)


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = _key(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _key(node: yaml.Node) -> str:
    if node.tag == _MERGE_TAG:
        raise _merge_key_error(node)
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(
            None, None, "a key must be a plain value, not a list or a mapping", node.start_mark)
    return str(node.value)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# Far above any real config (the chart's fullest renders ~10 KiB): a bound, so /dev/zero or a
# runaway generator is an error, not a MemoryError traceback.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def load_config(path: str | Path, *, strict: bool = False, pipe_ok: bool = True,
                warn: Warn = log_warning) -> Config:
    """`strict` (check-config): a `jwks.file` the key set could not use is an error.
    `pipe_ok`: a pipe or FIFO is read too (`check-config <(helm template ...)`); a reload says
    False, as it runs on the event loop and must not wait for a writer. `warn` gets each of
    the config's warnings (`config_warnings`)."""
    path = Path(path)
    try:
        text = _read_config(path, pipe_ok).decode("utf-8")
    except UnfitFile as exc:
        limit = f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB"
        raise ConfigError([f"cannot read: {limit if exc.too_large else exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"]) from None
    return parse_config(text, base_dir=path.parent, strict=strict, warn=warn)


def _read_config(path: Path, pipe_ok: bool) -> bytes:
    if pipe_ok and stat.S_ISFIFO(os.stat(path).st_mode):
        return read_pipe(path, MAX_CONFIG_BYTES)
    return read_regular_file(path, MAX_CONFIG_BYTES)  # never a device, bounded


def yaml_problem(exc: yaml.YAMLError) -> str:
    """`line 3 column 5: duplicate key 'x'`: where the YAML went wrong, then what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    return f"{where}{getattr(exc, 'problem', None) or exc}"


TOO_DEEP = "(top level): nested too deeply"


def parse_config(text: str, base_dir: Path | str = ".", *, strict: bool = False,
                 warn: Warn = log_warning) -> Config:
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc)]) from None
    except RecursionError:  # the YAML composer and constructor recurse per nesting level
        raise ConfigError([TOO_DEEP]) from None
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of keys"])
    try:
        config = Config.model_validate(data, context={"base_dir": str(base_dir)})
    except ValidationError as exc:
        raise ConfigError([issue(err) for err in exc.errors()]) from None
    except RecursionError:
        raise ConfigError([TOO_DEEP]) from None
    if (problems := unusable_jwks_files(config)) and strict:
        raise ConfigError(problems)
    for problem in problems:  # serve, reload: the file may be mid-rewrite; the key set retries
        log.warning("%s (its keys are fetched again until it can be read)", problem)
    for warning in config_warnings(config):
        warn(warning)
    return config


def config_warnings(config: Config) -> list[str]:
    """What loads and works but is likely a mistake, each naming its key path."""
    if config.quota.store != "memory" or not config.quota.enabled:
        return []  # quota off: nothing is enforced, as the memory-store checks say too
    # Harmless (benches use it to time the batched path without Redis), so only said.
    batched: list[tuple[str, ...]] = [
        ("quota", "plans", name, "mode")
        for name, plan in config.quota.plans.items() if plan.mode == "batched"]
    batched += [("tenants", "registry", tenant_id, "overrides", "mode")
                for tenant_id, entry in config.tenants.registry.items()
                if entry.overrides.mode == "batched"]
    return [f"{key_path(at)}: batched saves round trips to a shared store, and quota.store is "
            "memory, in the process: it saves none and adds work (use exact)" for at in batched]


def unusable_jwks_files(config: Config) -> list[str]:
    """Each `jwks.file` the key set could not use now: check-config refuses it (the issuer
    would have no keys and its every token answer 503); serve and a reload only warn, as an
    IdP or a sidecar may be rewriting the file, and the key set fetches it again until it can
    be read. Here, not on the model: the key set's own handling of a file that goes bad is
    tested with models built around such files."""
    problems = []
    for i, issuer in enumerate(config.issuers):
        path = issuer.jwks.file if issuer.jwks is not None else None
        if path is not None and (problem := _jwks_file_problem(path)) is not None:
            problems.append(f"issuers[{i}].jwks.file: {problem}")
    return problems


def _jwks_file_problem(path: str) -> str | None:
    try:
        read_jwks_file(Path(path))
    except ValueError as exc:
        return str(exc)
    return None


def key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{_shown(part)}" if out else _shown(part)
    return out or "(top level)"


def _shown(key: str) -> str:
    # A mapping key (a plan or tenant name) is the config author's text: one with a line
    # break, a control character or edge spaces is quoted and escaped, or the message would
    # read as two lines or hide what is wrong.
    return key if key and key.isprintable() and key.strip() == key else json.dumps(key)


def issue(err: Any, at: tuple[int | str, ...] = ()) -> str:
    """One validation error as `key.path: message`; `at` is where the validated value sits
    in the config when it was validated on its own."""
    loc = (*at, *err["loc"])
    if err["type"] == "extra_forbidden":
        known = _field_names_at(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{key_path(loc)}: unknown key{suggestion}"
    if err["type"] == "missing":
        return f"{key_path(loc)}: required key is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    if loc and loc[-1] == _KEY_MARK:  # pydantic's mark for a mapping key that failed
        return f"{key_path(loc[:-1])}: this name: {message}"
    return f"{key_path(loc)}: {message}"


_KEY_MARK = "[key]"


def _field_names_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `loc` accepts, for did-you-mean suggestions."""
    annotation: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the item's model is found in the list's annotation
        if (values := _mapping_values(annotation)) is not None:
            annotation = values  # `part` is a key of a mapping (a plan or tenant name)
            continue
        model = _model_of(annotation)
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return []
        annotation = field.annotation
    model = _model_of(annotation)
    if model is None:
        return []
    # As written in a config: the alias where a field has one (fromEnv, not from_env).
    return [field.alias or name for name, field in model.model_fields.items()]


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _model_of(annotation: Any) -> Any:
    if _is_model(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if (found := _model_of(arg)) is not None:
            return found
    return None


def _mapping_values(annotation: Any) -> Any:
    """The value annotation of a `dict[K, V]` (or `dict[K, V] | None`), else None."""
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is dict:
            return typing.get_args(arg)[1]
    return None
