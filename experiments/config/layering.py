"""Loading a config and layering its sources.

Layering used by `load_config` and `grid.expand` (later wins):
    schema defaults  <-  config file / grid base  <-  profile  <-  data set  <-  grid axes, seed
`load_config` adds one last layer, the command line's `--set KEY=VALUE` items (`apply_sets`),
so a profile's settings can be kept but for a few keys (a paper-profile run at smoke size).

Each layer the user writes (config file, grid base, each grid axis value) is validated ON ITS OWN
before layering (`check_layer`), so a profile cannot hide an invalid value by replacing it; only
rules that tie several keys together (`optim.warmup_steps < train.steps`, accelerator vs count)
wait for the merged config. A profile value that replaces one the user set is printed
(`profile smoke overrides train.steps: 500 -> 20`) and kept in `Config.overridden` (the MLflow
tag `record.TAG_OVERRIDDEN`). A profile never moves a GPU/TPU request to the CPU: when the
user's layer sets `resources.accelerator` to gpu or tpu and the profile says cpu, the user's
accelerator (and count) are kept and the console says so.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from diffseg3d.experiments.config.errors import ConfigError, format_errors
from diffseg3d.experiments.config.schema import Config, validate_config
from pydantic import ValidationError

#: Folder of the named profiles (`<name>.yaml`, each a partial config; package data).
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


# ---------------------------------------------------------------------------------------------
# Nested dicts


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: `override` merged into `base` recursively (override's leaves win)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(tree: dict, dotted: str, value: Any) -> dict:
    """A new nested dict with `tree[a][b] = value` for `dotted = "a.b"`."""
    out = copy.deepcopy(tree)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


#: Most values a YAML text may expand to once its aliases (`*name`) are followed: a config or
#: grid has a few hundred; an alias bomb ("billion laughs") reaches billions from a few lines.
MAX_YAML_VALUES = 100_000

#: Deepest nesting of a YAML text (configs and grids need fewer than 10 levels).
MAX_YAML_DEPTH = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlRefused(ConfigError):
    """A YAML text refused before it becomes Python values; the message names the line."""


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (plain data only: a `!!python/...` tag has no constructor there) that
    also refuses a key written twice in one mapping, which PyYAML silently resolves to the
    last one."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base`: the mapping's own keys may override merged ones
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader itself reports it
                if first is not None:
                    raise YamlRefused(f"line {line}: duplicate key {key!r} (first at line "
                                      f"{first}); each key may appear once in a mapping")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root) -> None:
    """Raise YamlRefused unless the composed node tree `root`, its aliases followed, stays
    within MAX_YAML_VALUES values and MAX_YAML_DEPTH levels and holds no alias of itself.

    Counted once per distinct node (aliases share nodes), so an alias bomb is refused in
    time linear in the file, before anything expands it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        line = node.start_mark.line + 1
        if key in open_nodes:
            raise YamlRefused(f"line {line}: a recursive alias (a value that contains itself)")
        if depth > MAX_YAML_DEPTH:
            raise YamlRefused(f"line {line}: nested deeper than {MAX_YAML_DEPTH} levels")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            open_nodes.add(key)
            children = (node.value if isinstance(node, yaml.SequenceNode)
                        else [n for pair in node.value for n in pair])
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_YAML_VALUES:
                    raise YamlRefused(
                        f"line {line}: its aliases expand to more than {MAX_YAML_VALUES:,} "
                        "values (an alias bomb?); write the values out or use fewer aliases")
            open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _yaml_mark(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def load_yaml_text(text: str) -> Any:
    """The plain data of one YAML document `text`, loaded safely and strictly.

    Refused (YamlRefused, one line naming the line): a tag outside YAML's plain
    types (`!!python/object...`: nothing is ever constructed from a tag), a key written twice
    in one mapping, aliases expanding to more than MAX_YAML_VALUES values (alias bombs), a
    recursive alias, nesting deeper than MAX_YAML_DEPTH; a syntax error names line and column."""
    loader = _StrictLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels") from None
        if root is None:
            return None
        _check_expansion(root)
        return loader.construct_document(root)
    except yaml.constructor.ConstructorError as err:
        tag = getattr(err.problem_mark, "line", None)
        if err.problem and "could not determine a constructor for the tag" in err.problem:
            name = err.problem.rsplit(" ", 1)[-1].strip("'").replace("tag:yaml.org,2002:", "!!")
            where = f"line {tag + 1}: " if tag is not None else ""
            raise YamlRefused(f"{where}tag {name} is not allowed (configs and grids hold plain "
                              "data: mappings, lists, strings, numbers, booleans)") from None
        raise YamlRefused(f"not valid YAML: {err.problem or err}{_yaml_mark(err)}") from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise YamlRefused(f"not valid YAML: {detail}{_yaml_mark(err)}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from `path` (`load_yaml_text`); a missing file, bad or refused YAML or a
    non-mapping is one line naming the file (and the line in it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte "
                          f"{err.start})") from None
    try:
        data = load_yaml_text(text)
    except YamlRefused as err:
        raise YamlRefused(f"{path}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# Profiles and layers


def available_profiles() -> list[str]:
    """Names of the profiles shipped in `experiments/profiles/`."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str | None) -> dict:
    """The partial config of the shipped profile `name` (`{}` for None).

    Looked up by NAME only among `available_profiles()`: a path or any other value is an error
    listing the profiles, so `--profile` never opens a file the user pointed at."""
    if name is None:
        return {}
    known = available_profiles()
    if name not in known:
        hint = " (a profile is a name, not a path)" if "/" in name or "\\" in name else ""
        raise ConfigError(f"unknown profile {name!r}{hint}; available profiles: {', '.join(known)}")
    path = PROFILES_DIR / f"{name}.yaml"
    raw = read_yaml(path)
    # Validate the profile on its own, so a typo is reported against the profile file.
    check_layer(raw, source=str(path))
    return raw


def _is_cross_key(error: dict) -> bool:
    # A model-level validator (input = the whole section): a rule over several keys, which only
    # the merged config can judge (e.g. warmup_steps < steps with the steps from a profile).
    return error["type"] == "value_error" and isinstance(error.get("input"), dict)


def check_layer(raw: dict, source: str) -> None:
    """Raise ConfigError naming `source` and each key whose value in the partial config `raw` is
    invalid ON ITS OWN (unknown key, wrong type, out of range, unsafe name).

    Rules over several keys are left to the merged config; this check exists so that a later
    layer (a profile) cannot replace, and so hide, a bad value the user wrote."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(raw).__name__}")
    try:
        Config.model_validate(raw)
    except ValidationError as err:
        own = [e for e in err.errors() if not _is_cross_key(e)]
        if own:
            raise ConfigError(format_errors(own, source)) from None


def normalise_layer(raw: dict) -> dict:
    """`raw` with the legacy `resources.gpus_per_trial: g` written as `resources.accelerator` /
    `accelerators_per_trial`, so layers compare key by key (other keys unchanged)."""
    resources = raw.get("resources")
    if not isinstance(resources, dict) or "gpus_per_trial" not in resources:
        return copy.deepcopy(raw)
    if "accelerator" in resources or "accelerators_per_trial" in resources:
        return copy.deepcopy(raw)  # the schema reports the combination
    resources = dict(resources)
    gpus = resources.pop("gpus_per_trial")
    if gpus:
        resources.update(accelerator="gpu", accelerators_per_trial=gpus)
    return {**copy.deepcopy(raw), "resources": resources}


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


#: Keys of `resources` a profile may not take from a user's GPU/TPU request.
_ACCELERATOR_KEYS = ("accelerator", "accelerators_per_trial")


@dataclass(frozen=True)
class Layered:
    """A user layer with a profile applied: `raw` (the merged partial config), `overridden`
    (`key: user -> profile (profile P)` per replaced user value) and `messages` (the console
    lines: one per override, and one per kept accelerator request)."""

    raw: dict
    overridden: tuple[str, ...]
    messages: tuple[str, ...]


def apply_profile(user: dict, profile: str | None, source: str) -> Layered:
    """Merge the profile `profile` over the user layer `user` (from `source`, e.g. a config file
    or a grid's base), reporting what it replaces and keeping a GPU/TPU request.

    Both layers are checked on their own first (`check_layer`)."""
    prof = normalise_layer(load_profile(profile))
    user = normalise_layer(user)
    check_layer(user, source)
    messages: list[str] = []
    wanted = (user.get("resources") or {}).get("accelerator")
    prof_res = prof.get("resources") or {}
    if wanted in ("gpu", "tpu") and prof_res.get("accelerator") == "cpu":
        prof = {**prof, "resources": {k: v for k, v in prof_res.items()
                                      if k not in _ACCELERATOR_KEYS}}
        messages.append(f"profile {profile} asks for resources.accelerator: cpu; keeping "
                        f"resources.accelerator: {wanted} from {source} (a profile never moves a "
                        "GPU/TPU request to the CPU)")
    user_leaves, prof_leaves = _leaves(user), _leaves(prof)
    overridden = []
    for key in sorted(set(user_leaves) & set(prof_leaves)):
        if user_leaves[key] != prof_leaves[key]:
            change = f"{key}: {_show(user_leaves[key])} -> {_show(prof_leaves[key])}"
            overridden.append(f"{change} (profile {profile})")
            messages.append(f"profile {profile} overrides {change}")
    return Layered(deep_merge(user, prof), tuple(overridden), tuple(messages))


def parse_set(item: str) -> tuple[str, Any]:
    """`("a.b", value)` from a command-line item `"a.b=VALUE"`; VALUE is read as YAML, so
    `2`, `false`, `[8, 16, 32, 64]` and `fixed_small` become an int, a bool, a list and a str."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, "
                          "e.g. --set train.steps=2")
    try:
        value = load_yaml_text(text) if text.strip() else ""
    except YamlRefused as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {err}") from None
    return key, value


def apply_sets(raw: dict, items: list[str] | tuple[str, ...]) -> Layered:
    """`raw` (a merged partial config) with each `--set KEY=VALUE` item in `items` applied
    last, in order. Each item is checked on its own like any user layer (an unknown key or a
    bad value names the item); a value it replaces is reported as `--set overrides ...`."""
    leaves = _leaves(raw)
    overridden: list[str] = []
    messages: list[str] = []
    for item in items:
        key, value = parse_set(item)
        layer = set_dotted({}, key, value)
        check_layer(layer, source=f"--set {item}")
        if key in leaves and leaves[key] != value:
            change = f"{key}: {_show(leaves[key])} -> {_show(value)}"
            overridden.append(f"{change} (--set)")
            messages.append(f"--set overrides {change}")
        raw = deep_merge(raw, layer)
        leaves = _leaves(raw)
    return Layered(raw, tuple(overridden), tuple(messages))


def say(lines) -> None:
    """Print console notes (profile overrides) on stderr, one line each."""
    for line in lines:
        print(line, file=sys.stderr)


def load_config(
    path: str | os.PathLike, profile: str | None = None, sets: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a YAML config (full or partial; defaults fill the rest), apply `profile` on top and
    then the `--set KEY=VALUE` items `sets` (see `apply_sets`).

    The file is validated on its own first; profile and `--set` overrides of its values are
    printed and kept in `Config.overridden` (see the module docstring)."""
    layered = apply_profile(read_yaml(path), profile, source=str(path))
    extra = apply_sets(layered.raw, sets)
    say(layered.messages + extra.messages)
    source = str(path) if profile is None else f"{path} (profile {profile})"
    if sets:
        source += " with " + " ".join(f"--set {item}" for item in sets)
    config = validate_config(extra.raw, source=source)
    return config.model_copy(update={"overridden": list(layered.overridden + extra.overridden)})
