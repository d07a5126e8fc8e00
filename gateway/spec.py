"""Model spec: the YAML file that declares every served model, parsed into typed objects.

A spec is checked twice: for internal consistency when it is loaded, and against Triton's
model metadata and config at start-up (``check_against_triton``). Either failure raises
``SpecError`` naming the offending field, and the gateway does not start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gateway.errors import SpecError

FeatureDtype = Literal["float", "int", "bool"]
_FEATURE_DTYPES: frozenset[str] = frozenset({"float", "int", "bool"})
_TENSOR_DTYPES: frozenset[str] = frozenset({"FP32", "FP64", "FP16"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    dtype: FeatureDtype
    index: int
    minimum: float = -math.inf
    maximum: float = math.inf
    default: float | None = None
    """Value used when neither the request nor the feature store has one; None = required."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if math.isfinite(self.minimum):
            out["min"] = self.minimum
        if math.isfinite(self.maximum):
            out["max"] = self.maximum
        out["default"] = self.default
        out["required"] = self.default is None
        return out


@dataclass(frozen=True, slots=True)
class OutputSpec:
    name: str
    dtype: str


OnOldFeatures = Literal["flag", "reject"]
WithoutFeatureStore = Literal["fail", "defaults"]


@dataclass(frozen=True, slots=True)
class ServingPolicy:
    """How old an answer may be, and what answers when real-time scoring cannot.

    The ladder: fresh cache (age <= max_age_s) → real time → stale cache (age <=
    max_staleness_s, only when real time failed) → declared default scores. Between max_age_s
    and max_age_s + stale_while_revalidate_s a cached prediction is served flagged stale while
    one background refresh recomputes it.
    """

    cache_ttl_s: int
    max_age_s: float
    stale_while_revalidate_s: float
    max_staleness_s: float
    default_scores: tuple[float, ...] | None
    """Last rung of the ladder, one value per output; None: fail instead."""
    without_feature_store: WithoutFeatureStore
    """Redis down: fail (503), or score from request values and declared defaults (flagged)."""
    max_feature_age_s: float | None
    on_old_features: OnOldFeatures

    def as_dict(self, outputs: Sequence[OutputSpec]) -> dict[str, Any]:
        return {
            "cache": {
                "ttl_s": self.cache_ttl_s,
                "max_age_s": self.max_age_s,
                "stale_while_revalidate_s": self.stale_while_revalidate_s,
                "max_staleness_s": self.max_staleness_s,
            },
            "fallback": {
                "default_scores": None
                if self.default_scores is None
                else {o.name: v for o, v in zip(outputs, self.default_scores, strict=True)},
                "without_feature_store": self.without_feature_store,
            },
            "feature_freshness": {
                "max_age_s": self.max_feature_age_s,
                "on_violation": self.on_old_features,
            },
        }


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    description: str
    triton_name: str
    triton_version: str
    """A version number as a string, or "latest"."""
    input_name: str
    input_dtype: str
    entity_key: str
    entity_namespace: str
    max_id_length: int
    max_batch_size: int
    deadline_s: float | None
    """Default request deadline for this model (None: the gateway's Triton timeout)."""
    policy: ServingPolicy
    outputs: tuple[OutputSpec, ...]
    features: tuple[FeatureSpec, ...]
    feature_by_name: Mapping[str, FeatureSpec] = field(compare=False, repr=False)
    output_names: tuple[str, ...] = field(compare=False, repr=False)
    """The outputs' names, in order (every answer's score keys)."""

    @property
    def cache_ttl_s(self) -> int:
        return self.policy.cache_ttl_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "triton": {
                "name": self.triton_name,
                "version": self.triton_version,
                "input": self.input_name,
                "datatype": self.input_dtype,
            },
            "entity": {"key": self.entity_key, "namespace": self.entity_namespace},
            "max_batch_size": self.max_batch_size,
            "deadline_ms": None if self.deadline_s is None else self.deadline_s * 1000,
            **self.policy.as_dict(self.outputs),
            "outputs": [{"name": o.name, "dtype": o.dtype} for o in self.outputs],
            "features": [f.as_dict() for f in self.features],
        }


def load_specs(path: Path) -> dict[str, ModelSpec]:
    """Read and validate the spec file; raises SpecError naming the bad field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SpecError(f"cannot read model spec {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise SpecError(f"model spec {path} is not valid YAML: {e}") from e
    return parse_specs(raw)


def parse_specs(raw: Any) -> dict[str, ModelSpec]:
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict) or not raw["models"]:
        raise SpecError("spec: top level must be a mapping with a non-empty 'models' mapping")
    _reject_unknown(raw, {"models"}, "spec")
    return {
        str(name): _parse_model(str(name), body, f"models.{name}")
        for name, body in raw["models"].items()
    }


def _parse_model(name: str, body: Any, where: str) -> ModelSpec:
    if not _MODEL_NAME.match(name):
        raise SpecError(f"{where}: invalid model name {name!r}")
    _require_mapping(body, where)
    _reject_unknown(
        body,
        {
            "description",
            "triton",
            "entity",
            "max_batch_size",
            "deadline_ms",
            "cache",
            "fallback",
            "feature_freshness",
            "outputs",
            "features",
        },
        where,
    )
    triton = _require_mapping(body.get("triton"), f"{where}.triton")
    _reject_unknown(triton, {"name", "version", "input", "datatype"}, f"{where}.triton")
    entity = _require_mapping(body.get("entity"), f"{where}.entity")
    _reject_unknown(entity, {"key", "namespace", "max_id_length"}, f"{where}.entity")

    input_dtype = str(triton.get("datatype", "FP32"))
    if input_dtype not in _TENSOR_DTYPES:
        raise SpecError(f"{where}.triton.datatype: {input_dtype!r} is not one of FP16/FP32/FP64")
    version = str(triton.get("version", "latest"))
    if version != "latest" and not version.isdigit():
        raise SpecError(f"{where}.triton.version: must be a number or 'latest', got {version!r}")

    outputs_raw = body.get("outputs")
    if not isinstance(outputs_raw, list) or not outputs_raw:
        raise SpecError(f"{where}.outputs: must be a non-empty list")
    outputs = tuple(_parse_output(o, f"{where}.outputs[{i}]") for i, o in enumerate(outputs_raw))

    features_raw = body.get("features")
    if not isinstance(features_raw, list) or not features_raw:
        raise SpecError(f"{where}.features: must be a non-empty list")
    features = tuple(
        _parse_feature(f, i, f"{where}.features[{i}]") for i, f in enumerate(features_raw)
    )
    _reject_duplicates([f.name for f in features], f"{where}.features")
    _reject_duplicates([o.name for o in outputs], f"{where}.outputs")
    policy = _parse_policy(body, outputs, where)

    return ModelSpec(
        name=name,
        description=str(body.get("description", "")),
        triton_name=_name(triton.get("name", name), f"{where}.triton.name", _MODEL_NAME),
        triton_version=version,
        input_name=_name(triton.get("input"), f"{where}.triton.input", _MODEL_NAME),
        input_dtype=input_dtype,
        entity_key=_name(entity.get("key"), f"{where}.entity.key", _NAME),
        entity_namespace=_name(entity.get("namespace"), f"{where}.entity.namespace", _NAME),
        max_id_length=int(
            _positive_number(entity.get("max_id_length", 128), f"{where}.entity.max_id_length")
        ),
        max_batch_size=int(
            _positive_number(body.get("max_batch_size", 64), f"{where}.max_batch_size")
        ),
        deadline_s=None
        if body.get("deadline_ms") is None
        else _positive_number(body["deadline_ms"], f"{where}.deadline_ms") / 1000,
        policy=policy,
        outputs=outputs,
        features=features,
        feature_by_name={f.name: f for f in features},
        output_names=tuple(o.name for o in outputs),
    )


def _parse_policy(
    body: Mapping[str, Any], outputs: Sequence[OutputSpec], where: str
) -> ServingPolicy:
    cache = _require_mapping(body.get("cache"), f"{where}.cache")
    _reject_unknown(
        cache,
        {"ttl_s", "max_age_s", "stale_while_revalidate_s", "max_staleness_s"},
        f"{where}.cache",
    )
    ttl_s = _positive_number(cache.get("ttl_s"), f"{where}.cache.ttl_s")
    if not ttl_s.is_integer():
        # Redis expiries are whole seconds; int(0.5) would become an invalid EX 0.
        raise SpecError(f"{where}.cache.ttl_s: must be a whole number of seconds, got {ttl_s}")
    if "max_age_s" not in cache:
        raise SpecError(
            f"{where}.cache.max_age_s: required (how old a cached prediction may be to be "
            "served as fresh; max_staleness_s only bounds the fallback when scoring fails)"
        )
    max_age_s = _positive_number(cache["max_age_s"], f"{where}.cache.max_age_s")
    swr_s = _number(
        cache.get("stale_while_revalidate_s", 0), f"{where}.cache.stale_while_revalidate_s"
    )
    if swr_s < 0:
        raise SpecError(f"{where}.cache.stale_while_revalidate_s: must be >= 0, got {swr_s}")
    max_staleness_s = _positive_number(
        cache.get("max_staleness_s", max_age_s), f"{where}.cache.max_staleness_s"
    )
    if max_age_s + swr_s > ttl_s:
        raise SpecError(
            f"{where}.cache: max_age_s + stale_while_revalidate_s must not exceed ttl_s ({ttl_s})"
        )
    if not max_age_s <= max_staleness_s <= ttl_s:
        raise SpecError(
            f"{where}.cache.max_staleness_s: must be between max_age_s ({max_age_s}) and "
            f"ttl_s ({ttl_s})"
        )

    fallback = _require_mapping(body.get("fallback", {}), f"{where}.fallback")
    _reject_unknown(fallback, {"default_scores", "without_feature_store"}, f"{where}.fallback")
    default_scores: tuple[float, ...] | None = None
    if fallback.get("default_scores") is not None:
        raw = _require_mapping(fallback["default_scores"], f"{where}.fallback.default_scores")
        names = [o.name for o in outputs]
        if sorted(raw) != sorted(names):
            raise SpecError(
                f"{where}.fallback.default_scores: needs exactly one value per output {names}, "
                f"got {sorted(raw)}"
            )
        default_scores = tuple(
            _finite(raw[n], f"{where}.fallback.default_scores.{n}") for n in names
        )
    without = fallback.get("without_feature_store", "fail")
    if without not in ("fail", "defaults"):
        raise SpecError(
            f"{where}.fallback.without_feature_store: must be 'fail' or 'defaults', got {without!r}"
        )

    freshness = _require_mapping(body.get("feature_freshness", {}), f"{where}.feature_freshness")
    _reject_unknown(freshness, {"max_age_s", "on_violation"}, f"{where}.feature_freshness")
    max_feature_age_s = (
        None
        if freshness.get("max_age_s") is None
        else _positive_number(freshness["max_age_s"], f"{where}.feature_freshness.max_age_s")
    )
    on_violation = freshness.get("on_violation", "flag")
    if on_violation not in ("flag", "reject"):
        raise SpecError(
            f"{where}.feature_freshness.on_violation: must be 'flag' or 'reject', "
            f"got {on_violation!r}"
        )
    return ServingPolicy(
        cache_ttl_s=int(ttl_s),
        max_age_s=max_age_s,
        stale_while_revalidate_s=swr_s,
        max_staleness_s=max_staleness_s,
        default_scores=default_scores,
        without_feature_store=without,
        max_feature_age_s=max_feature_age_s,
        on_old_features=on_violation,
    )


def _finite(value: Any, where: str) -> float:
    number = _number(value, where)
    if not math.isfinite(number):
        raise SpecError(f"{where}: must be finite, got {value!r}")
    return number


def _parse_output(raw: Any, where: str) -> OutputSpec:
    _require_mapping(raw, where)
    _reject_unknown(raw, {"name", "dtype"}, where)
    dtype = str(raw.get("dtype", "FP32"))
    if dtype not in _TENSOR_DTYPES:
        raise SpecError(f"{where}.dtype: {dtype!r} is not one of FP16/FP32/FP64")
    return OutputSpec(name=_name(raw.get("name"), f"{where}.name", _MODEL_NAME), dtype=dtype)


def _parse_feature(raw: Any, index: int, where: str) -> FeatureSpec:
    _require_mapping(raw, where)
    _reject_unknown(raw, {"name", "dtype", "min", "max", "default"}, where)
    name = _name(raw.get("name"), f"{where}.name", _NAME)
    if name.startswith("_"):
        raise SpecError(f"{where}.name: names starting with '_' are reserved")
    dtype = raw.get("dtype")
    if dtype not in _FEATURE_DTYPES:
        raise SpecError(f"{where}.dtype: must be one of float/int/bool, got {dtype!r}")
    if dtype == "bool":
        minimum, maximum = 0.0, 1.0
        if "min" in raw or "max" in raw:
            raise SpecError(f"{where}: bool features take no min/max")
    else:
        # Omit a bound for "unbounded"; a declared one must be a real number.
        minimum = _finite(raw["min"], f"{where}.min") if "min" in raw else -math.inf
        maximum = _finite(raw["max"], f"{where}.max") if "max" in raw else math.inf
        if minimum > maximum:
            raise SpecError(f"{where}: min {minimum} is greater than max {maximum}")
    default: float | None = None
    if raw.get("default") is not None:
        value = raw["default"]
        if dtype == "bool":
            if not isinstance(value, bool):
                raise SpecError(f"{where}.default: must be true or false")
            default = float(value)
        else:
            default = _number(value, f"{where}.default")
            if not math.isfinite(default) or not minimum <= default <= maximum:
                raise SpecError(f"{where}.default: {value} is outside [{minimum}, {maximum}]")
            if dtype == "int" and not default.is_integer():
                raise SpecError(f"{where}.default: {value} is not an integer")
    return FeatureSpec(
        name=name, dtype=dtype, index=index, minimum=minimum, maximum=maximum, default=default
    )


def check_against_triton(
    spec: ModelSpec, metadata: Mapping[str, Any], config: Mapping[str, Any]
) -> None:
    """Compare the spec with Triton's model metadata and config (JSON forms).

    Raises SpecError naming the first field that disagrees: a wrong input name, datatype or
    width would otherwise surface as failed or, worse, silently wrong predictions.
    """
    where = f"models.{spec.name}"
    max_batch = int(config.get("max_batch_size", 0))
    if max_batch <= 0:
        raise SpecError(
            f"{where}: Triton model {spec.triton_name!r} has max_batch_size 0; the gateway "
            "needs a batching model (max_batch_size > 0)"
        )
    if spec.max_batch_size > max_batch:
        raise SpecError(
            f"{where}.max_batch_size: {spec.max_batch_size} exceeds Triton's max_batch_size "
            f"{max_batch} for {spec.triton_name!r}"
        )
    inputs = {t["name"]: t for t in metadata.get("inputs", [])}
    if spec.input_name not in inputs:
        raise SpecError(
            f"{where}.triton.input: Triton model {spec.triton_name!r} has no input "
            f"{spec.input_name!r} (it has {sorted(inputs)})"
        )
    if len(inputs) != 1:
        raise SpecError(
            f"{where}.triton.input: Triton model has {len(inputs)} inputs; the gateway feeds "
            "exactly one [batch, n_features] tensor"
        )
    tensor = inputs[spec.input_name]
    if tensor["datatype"] != spec.input_dtype:
        raise SpecError(
            f"{where}.triton.datatype: spec says {spec.input_dtype}, Triton input "
            f"{spec.input_name!r} is {tensor['datatype']}"
        )
    shape = [int(d) for d in tensor["shape"]]
    if shape != [-1, len(spec.features)]:
        raise SpecError(
            f"{where}.features: spec declares {len(spec.features)} features, Triton input "
            f"{spec.input_name!r} has shape {shape} (expected [-1, {len(spec.features)}])"
        )
    outputs = {t["name"]: t for t in metadata.get("outputs", [])}
    for i, out in enumerate(spec.outputs):
        if out.name not in outputs:
            raise SpecError(
                f"{where}.outputs[{i}].name: Triton model has no output {out.name!r} "
                f"(it has {sorted(outputs)})"
            )
        t = outputs[out.name]
        if t["datatype"] != out.dtype:
            raise SpecError(
                f"{where}.outputs[{i}].dtype: spec says {out.dtype}, Triton output "
                f"{out.name!r} is {t['datatype']}"
            )
        out_shape = [int(d) for d in t["shape"]]
        if out_shape != [-1, 1]:
            raise SpecError(
                f"{where}.outputs[{i}]: Triton output {out.name!r} has shape {out_shape}; "
                "the gateway serves one value per row ([-1, 1])"
            )


def resolve_version(spec: ModelSpec, available: Sequence[str]) -> str:
    """The version the gateway serves: the pinned one, or the highest available."""
    if not available:
        raise SpecError(f"models.{spec.name}: Triton reports no versions of {spec.triton_name!r}")
    if spec.triton_version == "latest":
        return max(available, key=int)
    if spec.triton_version not in available:
        raise SpecError(
            f"models.{spec.name}.triton.version: version {spec.triton_version} is not loaded "
            f"in Triton (loaded: {sorted(available, key=int)})"
        )
    return spec.triton_version


def _require_mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: must be a mapping")
    return value


def _reject_unknown(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _reject_duplicates(names: list[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SpecError(f"{where}: duplicate name {name!r}")
        seen.add(name)


def _name(value: Any, where: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise SpecError(f"{where}: missing or invalid name {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _positive_number(value: Any, where: str) -> float:
    number = _number(value, where)
    if not number > 0:
        raise SpecError(f"{where}: must be > 0, got {value!r}")
    return number
