"""The typed training configuration: schema, YAML loading, ``--set`` overrides, validation.

The schema is a tree of dataclasses turned into an OmegaConf structured config, so an
unknown key or a value of the wrong type is refused while merging; value ranges and
choices are checked afterwards by :func:`validate`. Every problem raises one
``ValueError`` naming the key and what was expected (docs/training.md lists the keys).

Example::

    cfg = load_config("configs/toy2d.yaml", ["train.steps=2000", "model.hidden=64"])
    cfg.train.steps  # 2000
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scoresde.training.config_rules import model_keys, validate

__all__ = ["Config", "load_config", "config_from_dict", "config_to_dict",
           "config_to_yaml", "validate", "model_keys", "DEFAULT_CONFIG", "read_yaml_text", "read_yaml_file",
           "check_config_data", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits.yaml"

@dataclass
class DataConfig:
    name: str = "digits"                 # a name of scoresde.data.table.DATASETS
    root: str | None = None           # folder holding the mnist / cifar10 files
    n: int | None = None              # use only n training examples (toy: points generated)
    shape: list[int] | None = None    # expected example shape; None = the data set's own
    dequantize: bool = False             # train on (k + u)/L instead of bin centres (k + ½)/L


@dataclass
class SDEConfig:
    kind: str = "vp"                     # vp | subvp | ve (docs/sdes.md)
    schedule: str = "linear"             # vp/subvp: linear | cosine | ddpm (β_i = β_min/N .. β_max/N);
                                         # ve: linear (σ_min (σ_max/σ_min)^t) | smld (n_steps levels)
    beta_min: float = 0.1
    beta_max: float = 20.0
    n_steps: int = 1000                  # N of the ddpm schedule
    cosine_s: float = 0.008
    sigma_min: float = 0.01              # ve
    sigma_max: float = 50.0              # ve: about the largest distance between two training examples


@dataclass
class ModelConfig:
    kind: str = "unet"                   # mlp | unet
    dropout: float = 0.0
    hidden: int = 256                    # mlp
    depth: int = 3                       # mlp
    time_dim: int = 128                  # mlp
    channels: int = 128                  # unet
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    num_heads: int = 1
    norm_groups: int | None = None       # unet: groups of every GroupNorm (null: ≤ 32, ≥ 4 channels each)
    base: str = "none"                   # none | lattice: ε = exact ε* of per-pixel levels + net
    num_classes: int = 0                 # 0: unconditional; K: class-conditional on the data set's K labels


@dataclass
class LossConfig:
    weighting: str = "simple"            # simple | likelihood
    time_sampling: str = "continuous"    # continuous | discrete
    t_eps: float | None = None        # None: the loss's default


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 128                # global batch: all ranks and micro-batches together
    grad_accum: int = 1                  # micro-batches per step and rank
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100              # linear LR warm-up, then constant
    grad_clip: float = 1.0               # max global grad norm; 0 disables clipping
    ema_decay: float = 0.999
    ema_warmup: bool = True              # effective decay min(decay, (1+n)/(10+n)) at update n
    log_every: int = 50
    ckpt_every: int = 500
    keep_last: int = 2                   # checkpoints kept on disk
    max_bad_steps: int = 0               # non-finite steps skipped before the run stops
    amp: bool = True                     # bf16 autocast, on CUDA only
    compile: bool = False                # torch.compile the network and the AdamW + EMA update
    compile_mode: str = "default"        # torch.compile mode: default | reduce-overhead | max-autotune |
                                         # max-autotune-no-cudagraphs
    fused: bool = True                   # fused AdamW kernel on CUDA (eager step); ignored on the CPU
    channels_last: bool = False          # U-Net weights and batches in channels_last memory format
    tensorboard: bool = True             # also log to TensorBoard when it is installed
    threads: int | None = None        # torch CPU threads; None = torch's default
    label_dropout: float | None = None  # P(label → null label) when conditional; None: 0.1


@dataclass
class SampleConfig:
    sampler: str = "ode"
    steps: int = 100
    n: int = 64                          # samples drawn after training (0: none)


@dataclass
class EvalConfig:
    bpd: bool = True                     # test bits/dim by the probability-flow ODE
    bpd_n: int = 256                     # test examples used (0: all)
    bpd_trace: str = "hutchinson"        # hutchinson | exact
    bpd_probes: int = 1
    vlb: bool = True                     # DDPM variational bound in bits/dim
    mixture: bool = False                # conditional runs: also p(x) by the class mixture (K × the ODE's NFE)
    vlb_terms: int | None = None      # random subset of the N terms (None: all)
    ode_sigma: float | None = None    # ODE from σ(t_eps) = ode_sigma (None: t_eps = 1e-5)
    vlb_sigma: float | None = None    # VLB on vlb_steps log-SNR steps from σ = vlb_sigma (None: i/N)
    vlb_steps: int = 1000
    batch_size: int = 256
    rtol: float = 1e-4                   # dopri5 tolerances of the ODE bits/dim (docs/benchmarks.md,
    atol: float = 1e-4                   # "Default tolerances vs the Hutchinson error on digits")


@dataclass
class Config:
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:K
    data: DataConfig = field(default_factory=DataConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _field_type(key: str):
    """The annotated type of a dotted config key (``None`` if unknown)."""
    cls, tp = Config, None
    for part in key.split("[")[0].split("."):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return None
        tp = cls = hints[part]
    return tp


def _describe(tp) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and args:
        return _describe(args[0]) + " or null"
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if dataclasses.is_dataclass(tp):
        return "a section with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return names.get(tp, str(tp))


def _type_ok(value, tp) -> bool:
    """Whether ``value`` has the schema type ``tp`` (scalars, lists, optionals; not sections)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return value is None or _type_ok(value, args[0])
    if typing.get_origin(tp) is list:
        return isinstance(value, list) and all(_type_ok(v, typing.get_args(tp)[0]) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # YAML 1.1 reads 1e-4 (no dot) as a string: that one is a number too
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or _is_number(value)
    if tp is str:
        return isinstance(value, str)
    return True  # pragma: no cover - the schema uses only the types above


def _check_value(value, tp, name: str, origin: str) -> None:
    """``value`` must have the schema's type ``tp`` before OmegaConf sees it (OmegaConf would turn
    ``2`` into ``True``, ``"3"`` into ``3`` and accept a number for a string)."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        _check_types(value, tp, origin, name + ".")
    elif dataclasses.is_dataclass(tp) or not _type_ok(value, tp):
        raise ValueError(f"{origin}: config key {name!r}: expected {_describe(tp)}, got {value!r}")


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return isinstance(text, str)


def _check_types(data: dict, cls, origin: str, prefix: str = "") -> None:
    """Every known key of ``data`` has its schema type (unknown keys are left to the merge)."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if isinstance(key, str) and key in hints:
            _check_value(value, hints[key], prefix + key, origin)


def _merge(base: DictConfig, other: dict, origin: str) -> DictConfig:
    if not isinstance(other, dict):
        raise TypeError(f"{origin}: expected a mapping of config sections, got {type(other).__name__}")
    _check_types(other, Config, origin)
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:
        key = e.full_key or ""
        if "not in" in str(e) or type(e).__name__ == "ConfigKeyError":
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            known = sorted(OmegaConf.select(base, parent).keys()) if parent else sorted(base.keys())
            raise ValueError(f"{origin}: unknown config key {key!r}: expected one of "
                             f"{', '.join(f'{parent}.{k}' if parent else k for k in known)}") from None
        value = getattr(e, "value", None)
        tp = _field_type(key) if key else None
        what = _describe(tp) if tp is not None else str(e).splitlines()[0]
        got = f", got {value!r}" if value is not None else ""
        raise ValueError(f"{origin}: config key {key or '(section)'!r}: expected {what}{got}") from None


def parse_overrides(items) -> dict:
    """``["a.b=1", "c=[1,2]"]`` → nested dict; values parsed as YAML scalars/lists (bounded like a
    config file). A key given twice is refused, as a duplicate key of a YAML file is."""
    out: dict = {}
    seen: set = set()
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=2000")
        key, text = (s.strip() for s in item.split("=", 1))
        if key in seen:
            raise ValueError(f"--set {item!r}: duplicate key {key!r}: expected each key once")
        seen.add(key)
        try:
            value = read_yaml_text(text, origin=f"--set {item!r}") if text else None
        except yaml.YAMLError:
            raise ValueError(f"--set {item!r}: value {text!r} is not valid YAML") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {p!r} is set twice as a value and a section")
        node[parts[-1]] = value
    return out


# Configs are data (docs/training.md, "Configs are data"): bounded before they are parsed or merged.
MAX_CONFIG_BYTES = 64 * 1024   # characters; the largest config of configs/ has < 2 000
MAX_CONFIG_DEPTH = 32          # nested sections and lists
MAX_CONFIG_NODES = 100_000     # values of a config given as Python objects (shared ones each time)
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it


class _UniqueKeyLoader(_BaseLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (instead of last-wins)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): "
                    f"expected each key once", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _flow_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside quotes and comments (an upper bound of the flow
    nesting): pure-Python PyYAML takes quadratic time on deep flow nesting, so it is checked first."""
    depth = deepest = 0
    quote, comment, prev = None, False, "\n"
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
        prev = ch
    return deepest


def _deep(origin: str) -> ValueError:
    return ValueError(f"{origin}: nested more than {MAX_CONFIG_DEPTH} levels deep: expected a config of "
                      f"sections and values")


def _check_yaml_events(text: str, origin: str) -> None:
    """Nesting depth ≤ ``MAX_CONFIG_DEPTH`` and aliases that expand to no more values than the
    text has characters, read from the parser's events (nothing is built)."""
    try:
        _count_events(text, origin)
    except yaml.YAMLError as e:
        if "nesting depth" in str(e):  # libyaml's own limit (1 000 levels) came first
            raise _deep(origin) from None
        raise


def _count_events(text: str, origin: str) -> None:
    """Counts the values of the document with every alias expanded (a section or list is one value
    plus its contents), and stops at the first level too deep or the first count too large."""
    size: dict = {}     # anchor → values its node expands to
    stack: list = []    # [anchor, values so far] of the open sections and lists
    total = 0           # values of the expanded document so far
    for ev in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([ev.anchor, 1])
            if len(stack) > MAX_CONFIG_DEPTH:
                raise _deep(origin)
            n = 1
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, inner = stack.pop()
            if anchor is not None:
                size[anchor] = inner
            if stack:
                stack[-1][1] += inner
            continue
        elif isinstance(ev, yaml.AliasEvent):
            n = size.get(ev.anchor, 1)
        elif isinstance(ev, yaml.ScalarEvent):
            n = 1
            if ev.anchor is not None:
                size[ev.anchor] = 1
        else:
            continue
        if stack and not isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack[-1][1] += n
        total += n
        if total > max(len(text), 1):
            raise ValueError(f"{origin}: YAML aliases expand to more values than the text's {len(text)} "
                             f"characters: expected a config without alias bombs")


def read_yaml_text(text: str, origin: str = "config"):
    """YAML → Python objects, bounded before anything is built: at most ``MAX_CONFIG_BYTES``
    characters and ``MAX_CONFIG_DEPTH`` levels, aliases expanding to no more values than the text
    has characters (``ValueError`` naming ``origin`` otherwise). Duplicate keys are refused
    (``yaml.YAMLError``, like invalid YAML)."""
    if not isinstance(text, str):
        raise ValueError(f"{origin}: expected YAML text, got {type(text).__name__}")
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{origin}: {len(text)} characters, expected a config of at most "
                         f"{MAX_CONFIG_BYTES} characters")
    if _BaseLoader is yaml.SafeLoader and _flow_depth(text) > MAX_CONFIG_DEPTH:  # PyYAML without libyaml
        raise _deep(origin)
    _check_yaml_events(text, origin)
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path, origin: str):
    """:func:`read_yaml_text` of a file, reading no more than the bound allows (a huge file is
    refused without being read)."""
    with Path(path).open("rb") as f:  # UTF-8: at most 4 bytes a character
        raw = f.read(4 * MAX_CONFIG_BYTES + 1)
    if len(raw) > 4 * MAX_CONFIG_BYTES:
        raise ValueError(f"{origin}: more than {4 * MAX_CONFIG_BYTES} bytes, expected a config of at most "
                         f"{MAX_CONFIG_BYTES} characters")
    return read_yaml_text(raw.decode(), origin)


def check_config_data(data, origin: str) -> None:
    """A config given as Python objects (a checkpoint's, a parsed file's) is data: at most
    ``MAX_CONFIG_DEPTH`` levels and ``MAX_CONFIG_NODES`` values (shared ones counted each time),
    and no ``${`` in any key or value — OmegaConf would resolve it as an interpolation (an
    environment variable, another key). ``ValueError`` naming ``origin`` and the key otherwise."""
    stack = [(data, "", 0)]
    count = 0
    while stack:  # iterative: a 5 000-deep list is refused, not a RecursionError
        value, key, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ValueError(f"{origin}: more than {MAX_CONFIG_NODES} values: expected a config of "
                             f"sections and values")
        if depth > MAX_CONFIG_DEPTH:
            raise _deep(origin)
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and "${" in k:
                    raise ValueError(f"{origin}: config key {k[:80]!r} holds '${{': expected plain keys "
                                     f"(configs are data; interpolation is not resolved)")
                stack.append((v, f"{key}.{k}" if key else str(k), depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str) and "${" in value:
            raise ValueError(f"{origin}: config key {key!r}: value {value[:80]!r} holds '${{': expected a "
                             f"plain value (configs are data; interpolation is not resolved)")


def _read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} not found: expected a YAML file")
    try:
        data = read_yaml_file(path, f"config file {str(path)!r}")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ValueError(f"config file {str(path)!r} is not valid YAML ({first})") from None
    if data is None:
        raise ValueError(f"config file {str(path)!r} is empty: expected a mapping of config sections "
                         f"(configs/digits.yaml is the default config)")
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r}: expected a mapping of sections, "
                         f"got {type(data).__name__}")
    return data


def config_from_dict(data: dict, overrides=None, origin: str = "config") -> Config:
    """Schema defaults ← ``data`` ← ``overrides`` (``--set`` items), validated. Both are bounded
    and free of ``${`` (:func:`check_config_data`) before anything is merged."""
    check_config_data(data, origin)
    cfg = _merge(OmegaConf.structured(Config), data, origin)
    if overrides:
        sets = parse_overrides(overrides)
        check_config_data(sets, "--set")
        cfg = _merge(cfg, sets, "--set")
    cfg = OmegaConf.to_object(cfg)
    validate(cfg)
    return cfg


def load_config(path=None, overrides=None) -> Config:
    """Read a YAML config (default ``configs/digits.yaml``), apply ``--set`` overrides, validate."""
    path = DEFAULT_CONFIG if path is None else path
    return config_from_dict(_read_yaml(path), overrides, origin=str(path))


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
