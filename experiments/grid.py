"""A grid file + a profile + an optional data override -> validated, named trial configs.

Read top to bottom, in the order a grid is processed:
1. `resolve_grid_path` (a path, or a shipped grid's name) and `load_grid`: parse the YAML
   (`Grid`), check every layer the user wrote ON ITS OWN (`layering.check_layer`: a profile
   cannot hide a bad value), resolve `include`s, check data sets and axes.
2. `expand`: per comparison, the profile over its base (`layering.apply_profile`: overrides
   printed once per key, recorded per trial); per data set x axis values x seed one validated
   `Config`, layered (later wins) schema defaults <- base <- profile <- data set (`data.name`,
   `data.root` made absolute) <- axis values <- seed; the equal-budget check; configs that train
   the same model merged (`training_key`); trial names, safe (`core/data/safe_name.py`) and
   unique; U-Net levels checked against the prepared data's shape, before any trial starts.
   `--data DIR` replaces every data set by DIR (labelled with DIR's dataset.json name), so
   trials that differed only by data set collapse into one trial keeping every table it feeds.
3. `grid_hash`: the id of one expansion (its Tune folder and MLflow parent run).
YAML layering itself is `config/layering.py`; the config schema `config/schema.py`, the grid
file's `config/grid_file.py`.

Grid YAML (`experiments/grids/*.yaml`):

    name: table1_recycling            # MLflow experiment / parent run label
    description: ...                  # free text
    seeds: [0]                        # every trial runs once per seed
    data_sets:                        # data set label -> default prepared folder
      prostate-mr: data/prostate-mr
      amos-ct: data/amos-ct
    base: {method: diffusion, ...}    # partial config shared by every trial
    comparisons:
      - table: "1"                    # the paper table this comparison feeds
        data_sets: [prostate-mr]      # optional subset of data_sets (default: all)
        axes: {diffusion.recycling: [false, true]}   # Cartesian product over the axes
    include: [other.yaml]             # optional: comparisons of other grids (their own base,
                                      # data sets merged), e.g. paper.yaml = the three tables
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from diffseg3d.core.data.safe_name import UnsafeNameError, check_safe_name
from diffseg3d.experiments.config.errors import ConfigError, GridError
from diffseg3d.experiments.config.grid_file import Comparison, Grid
from diffseg3d.experiments.config.layering import (
    Layered,
    apply_profile,
    check_layer,
    deep_merge,
    load_profile,
    read_yaml,
    say,
    set_dotted,
)
from diffseg3d.experiments.config.schema import Config, config_hash, validate_config
from pydantic import ValidationError

#: Folder of the shipped grids.
GRIDS_DIR = Path(__file__).resolve().parent / "grids"

#: Keys every method of one comparison must share: the paper compares at equal compute budget.
BUDGET_KEYS = ("train.steps", "data.batch_size")


@dataclass(frozen=True)
class Trial:
    """One unique configuration to run: readable `name`, validated `config`, its `hash` and
    every paper table it feeds (`tables`, also stored in `config.tables`)."""

    name: str
    config: Config
    hash: str
    tables: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# 1. Finding and reading a grid file


def resolve_grid_path(grid: str | os.PathLike) -> Path:
    """A grid file path; a bare name like `paper` or `paper.yaml` finds the shipped grid."""
    path = Path(grid)
    if path.is_file():
        return path
    shipped = GRIDS_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in GRIDS_DIR.glob("*.yaml")))
    raise GridError(f"{grid}: no such grid file (shipped grids: {known})")


def load_grid(path: str | os.PathLike, _seen: tuple[str, ...] = ()) -> Grid:
    """Parse a grid file and resolve its `include`s into its own comparisons."""
    path = Path(path).resolve()
    if str(path) in _seen:
        raise GridError(f"{path}: include cycle through {' -> '.join(_seen)}")
    try:
        raw = read_yaml(path)
    except ConfigError as err:
        raise GridError(str(err)) from None
    grid = _parse(raw, str(path))
    _check_layers(grid, str(path))
    comparisons = [
        c.model_copy(update={"base": deep_merge(grid.base, c.base)}) for c in grid.comparisons
    ]
    data_sets = dict(grid.data_sets)
    for inc in grid.include:
        child = load_grid(path.parent / inc, (*_seen, str(path)))
        comparisons.extend(child.comparisons)
        for name, root in child.data_sets.items():
            data_sets.setdefault(name, root)
    for c in comparisons:
        for name in c.data_sets or []:
            if name not in data_sets:
                raise GridError(
                    f"{path}: comparison for table {c.table} uses data set {name!r}, which is not "
                    f"in data_sets ({', '.join(data_sets) or 'none'})"
                )
        for key, values in c.axes.items():
            if not values:
                raise GridError(f"{path}: table {c.table} axis {key!r} has no values")
    if not data_sets:
        raise GridError(f"{path}: data_sets is empty (need at least one data set)")
    return grid.model_copy(
        update={"comparisons": comparisons, "data_sets": data_sets, "include": []}
    )


def _parse(raw: dict, source: str) -> Grid:
    try:
        return Grid.model_validate(raw)
    except ValidationError as err:
        lines = [
            f"  - {'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')} "
            f"(got {e.get('input')!r})"
            for e in err.errors()
        ]
        raise GridError(f"{source}: invalid grid:\n" + "\n".join(lines)) from None


def _check_layers(grid: Grid, source: str) -> None:
    """Each user-written layer of one grid file on its own (`layers.check_layer`)."""
    layers = [(grid.base, f"{source} base")]
    for c in grid.comparisons:
        layers.append((c.base, f"{source} table {c.table} base"))
        layers += [(set_dotted({}, key, value), f"{source} table {c.table} axis {key}={value!r}")
                   for key, values in c.axes.items() for value in values]
    for raw, where in layers:
        try:
            check_layer(raw, where)
        except ConfigError as err:
            raise GridError(str(err)) from None


# ---------------------------------------------------------------------------------------------
# 2. Expanding a grid into trials


def expand(
    grid: Grid | str | os.PathLike,
    profile: str | None = None,
    data_override: str | os.PathLike | None = None,
) -> list[Trial]:
    """All unique trials of `grid` under `profile`, in a deterministic order (comparisons as
    written, then data sets, axis values, seeds). A configuration reached by several comparisons
    appears once, with all their tables; configurations that differ only in `eval.samplers`
    are one trial sampled with the union of their variants (`training_key`)."""
    source = str(grid) if not isinstance(grid, Grid) else grid.name
    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    load_profile(profile)  # an unknown profile fails before anything else
    check_size(grid, source)
    roots, override_label = _data_roots(grid, data_override)

    # training key -> (config, tables), in order of first appearance
    merged: dict[str, tuple[Config, list[str]]] = {}
    messages: list[str] = []
    for comp in grid.comparisons:
        layered = apply_profile(comp.base, profile, source=f"{source} table {comp.table} base")
        messages += [m for m in layered.messages if m not in messages]
        configs = _comparison_configs(grid, comp, layered, roots, override_label, source)
        _check_budget(comp.table, configs, source)
        _merge_by_training(merged, configs, comp.table)
    trials = _named_trials(merged, source)
    say(messages)
    return trials


def expansion_size(grid: Grid) -> tuple[int, list[str]]:
    """(the number of trial configurations `grid` expands to before duplicates merge, one
    `table T: 2 data sets x key 3 x 2 seeds = 12` term per comparison)."""
    total, terms = 0, []
    for comp in grid.comparisons:
        n_data = len(comp.data_sets or grid.data_sets)
        factors = [f"{n_data} data set{'s' * (n_data != 1)}"]
        count = n_data * len(grid.seeds)
        for key, values in comp.axes.items():
            count *= len(values)
            factors.append(f"{key} {len(values)}")
        factors.append(f"{len(grid.seeds)} seed{'s' * (len(grid.seeds) != 1)}")
        total += count
        terms.append(f"table {comp.table}: {' x '.join(factors)} = {count:,}")
    return total, terms


def check_size(grid: Grid, source: str) -> None:
    """Raise GridError naming the count and the axes when `grid` expands to more than its
    `max_trials` configurations; checked before any config is built or any trial starts."""
    total, terms = expansion_size(grid)
    if total > grid.max_trials:
        raise GridError(
            f"{source}: the grid expands to {total:,} trial configurations, more than "
            f"max_trials {grid.max_trials:,} ({'; '.join(terms)}); fix the axes, or set "
            f"max_trials: {total} in the grid file to run them all"
        )


def _data_roots(grid: Grid, data_override) -> tuple[dict[str, str], str | None]:
    """(data set label -> absolute prepared folder, label replacing every data set's or None):
    `--data DIR` replaces every folder by DIR, labelled with DIR's own name."""
    if data_override is not None:
        roots = {name: absolute_root(data_override) for name in grid.data_sets}
        return roots, data_set_label(data_override)
    return {name: absolute_root(root) for name, root in grid.data_sets.items()}, None


def _comparison_configs(grid: Grid, comp: Comparison, layered: Layered, roots: dict[str, str],
                        override_label: str | None, source: str) -> list[Config]:
    """One validated config per data set x axis values x seed of one comparison: the layers
    base + profile (`layered`) <- data set <- axis values <- seed, then the whole config."""
    names = comp.data_sets or list(grid.data_sets)
    keys = list(comp.axes)
    configs = []
    for ds in names:
        for values in itertools.product(*(comp.axes[k] for k in keys)):
            for seed in grid.seeds:
                raw = layered.raw
                raw = set_dotted(raw, "data.name", override_label or ds)
                raw = set_dotted(raw, "data.root", roots[ds])
                for key, value in zip(keys, values, strict=True):
                    raw = set_dotted(raw, key, value)
                raw = set_dotted(raw, "seed", seed)
                label = ", ".join(f"{k}={v!r}" for k, v in zip(keys, values, strict=True))
                config = validate_config(
                    raw, source=f"{source} table {comp.table} ({ds}; {label}; seed {seed})"
                )
                configs.append(config.model_copy(update={"overridden": list(layered.overridden)}))
    return configs


def _check_budget(table: str, configs: list[Config], source: str) -> None:
    for key in BUDGET_KEYS:
        section, field = key.split(".")
        values = {getattr(getattr(c, section), field) for c in configs}
        if len(values) > 1:
            raise GridError(
                f"{source}: table {table} compares methods at different compute budgets: "
                f"{key} takes values {sorted(values)}"
            )


def _merge_by_training(merged: dict[str, tuple[Config, list[str]]], configs: list[Config],
                       table: str) -> None:
    """Add one comparison's configs to `merged` (training key -> (config, tables)): a model
    already there gains the table and the comparison's sampling variants."""
    for config in configs:
        key = training_key(config)
        if key not in merged:
            merged[key] = (config, [])
        merged[key] = (_with_samplers_of(merged[key][0], config), merged[key][1])
        if table not in merged[key][1]:
            merged[key][1].append(table)


def training_key(config: Config) -> str:
    """`config_hash` without `eval.samplers`: equal for configs that train the same model.

    Sampling variants (Table 4) re-score the trained parameters, so comparisons that reach one
    model, one asking for variants and one not, share one trial that samples the union
    (`expand`); the trial's own `config_hash` includes the merged list."""
    return config_hash(config.model_copy(
        update={"eval": config.eval.model_copy(update={"samplers": []})}))


def _with_samplers_of(config: Config, other: Config) -> Config:
    """`config` with `other`'s `eval.samplers` appended (first appearance order, no repeats)."""
    samplers = list(config.eval.samplers)
    samplers += [v for v in other.eval.samplers if v not in samplers]
    if samplers == list(config.eval.samplers):
        return config
    return config.model_copy(
        update={"eval": config.eval.model_copy(update={"samplers": samplers})})


def _named_trials(merged: dict[str, tuple[Config, list[str]]], source: str) -> list[Trial]:
    """The merged configs as `Trial`s: readable names (made unique with the config hash where two
    configs share one), safe as file names, U-Net levels checked against the prepared data."""
    trials = []
    names_seen: dict[str, int] = {}
    for config, tables in merged.values():
        h = config_hash(config)
        name = trial_name(config)
        names_seen[name] = names_seen.get(name, 0) + 1
        if names_seen[name] > 1:
            # Two different configs share a readable name (an axis not in the name): disambiguate.
            name = f"{name}_{h[:6]}"
        try:
            check_safe_name(name, what="trial name")
        except UnsafeNameError as err:
            raise GridError(f"{source}: {err}") from None
        config = config.model_copy(update={"name": name, "tables": list(tables)})
        check_levels_fit(config, f"{source}: trial {name}")
        trials.append(Trial(name=name, config=config, hash=h, tables=tuple(tables)))
    return trials


def trial_name(config: Config) -> str:
    """Readable name from the config: `prostate-mr_diffusion_x0_recycle-Y_dice-Y_k5_s0`,
    `amos-ct_unet_dice-Y_s0`, `amos-ct_nnunet_3d_fullres_s0` (`_published` after the
    configuration for nnU-Net's own schedule); `_tindex` after the steps when
    `diffusion.time_input` is index (the default fraction adds nothing, so names of earlier
    grids are unchanged)."""
    if config.method == "nnunet":
        n = config.nnunet
        parts = [config.data.name, "nnunet", n.configuration,
                 *(["published"] if n.budget == "published" else [])]
    elif config.method == "unet":
        parts = [config.data.name, "unet", f"dice-{_yn(config.loss.dice)}"]
    else:
        d = config.diffusion
        parts = [
            config.data.name,
            "diffusion",
            d.output,
            f"recycle-{_yn(d.recycling)}",
            f"dice-{_yn(config.loss.dice)}",
            f"k{d.train_steps}",
            *(["tindex"] if d.time_input == "index" else []),
        ]
    return "_".join([*parts, f"s{config.seed}"])


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


def check_levels_fit(config: Config, what: str) -> None:
    """Raise GridError naming `what` (the trial) unless every spatial size of the prepared data
    at `config.data.root` is divisible by the network's down-sampling factor, with levels =
    len(model.channels): 2**(levels - 1) for diffseg3d (it halves each size at every level below
    the top), 2**levels for imgx_v010 (its full-resolution stem adds one halving). nnU-Net
    plans its own network (and pads), so `method: nnunet` has no such rule."""
    if config.method == "nnunet":
        return
    shape = prepared_shape(config.data.root)
    levels = len(config.model.channels)
    released = config.model.architecture == "imgx_v010"
    divisor = 2**levels if released else 2 ** (levels - 1)
    if shape is None or all(size % divisor == 0 for size in shape):
        return
    rule = "2**levels for model.architecture imgx_v010" if released else "2**(levels-1)"
    raise GridError(
        f"{what}: the prepared data's spatial shape {list(shape)} ({config.data.root}) is not "
        f"divisible by {divisor} = {rule} for model.channels {config.model.channels} "
        f"({levels} levels); prepare the data with sizes divisible by {divisor} or use fewer "
        "levels"
    )


def prepared_shape(root: str | os.PathLike) -> tuple[int, ...] | None:
    """Spatial shape from a prepared folder's dataset.json; None when there is none yet (a URL,
    or data not prepared: the trial then reports the missing data set)."""
    if "://" in os.fspath(root):
        return None
    meta = Path(root) / "dataset.json"
    if not meta.is_file():
        return None
    try:
        shape = json.loads(meta.read_text()).get("shape")
    except (json.JSONDecodeError, AttributeError) as err:
        raise GridError(f"{meta}: not a JSON object: {err}") from None
    if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
        return None  # the data set loader names this file and key
    return tuple(shape)


# ---------------------------------------------------------------------------------------------
# Data roots and the identity of an expansion


def data_set_label(root: str | os.PathLike) -> str:
    """Label of a prepared folder: its dataset.json `name`, else the folder's name."""
    meta = Path(root) / "dataset.json"
    if meta.is_file():
        try:
            name = json.loads(meta.read_text()).get("name")
        except json.JSONDecodeError as err:
            raise GridError(f"{meta}: not valid JSON: {err}") from None
        if name is not None and name != "":
            try:
                return check_safe_name(name, what="key 'name'")
            except UnsafeNameError as err:
                raise GridError(f"{meta}: {err}") from None
    try:
        return check_safe_name(Path(root).resolve().name, what="data set folder name")
    except UnsafeNameError as err:
        raise GridError(f"{root}: no dataset.json name and {err}") from None


def absolute_root(root: str | os.PathLike) -> str:
    """A data root as an absolute path (URLs unchanged): trials run in other working
    directories (Ray), and the config hash must be the one the trial itself computes."""
    root = os.fspath(root)
    return root if "://" in root else str(Path(root).resolve())


def grid_hash(trials: list[Trial]) -> str:
    """Stable id of an expanded grid (its set of trial hashes): reruns of the same command map to
    the same MLflow parent run."""
    joined = ",".join(sorted(t.hash for t in trials))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]
