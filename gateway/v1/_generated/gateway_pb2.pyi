# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_MODE_UNSPECIFIED: _ClassVar[CacheMode]
    CACHE_MODE_PREFER: _ClassVar[CacheMode]
    CACHE_MODE_BYPASS: _ClassVar[CacheMode]
    CACHE_MODE_ONLY: _ClassVar[CacheMode]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_CACHE: _ClassVar[Source]
    SOURCE_MODEL: _ClassVar[Source]
    SOURCE_NONE: _ClassVar[Source]
    SOURCE_STALE: _ClassVar[Source]
    SOURCE_DEFAULT: _ClassVar[Source]
CACHE_MODE_UNSPECIFIED: CacheMode
CACHE_MODE_PREFER: CacheMode
CACHE_MODE_BYPASS: CacheMode
CACHE_MODE_ONLY: CacheMode
SOURCE_UNSPECIFIED: Source
SOURCE_CACHE: Source
SOURCE_MODEL: Source
SOURCE_NONE: Source
SOURCE_STALE: Source
SOURCE_DEFAULT: Source

class Instance(_message.Message):
    __slots__ = ("entity_id", "features")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    features: _containers.ScalarMap[str, float]
    def __init__(self, entity_id: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "entity_id", "features", "cache", "request_id")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    entity_id: str
    features: _containers.ScalarMap[str, float]
    cache: CacheMode
    request_id: str
    def __init__(self, model: _Optional[str] = ..., entity_id: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ..., cache: _Optional[_Union[CacheMode, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("entity_id", "scores", "source", "prediction_age_s", "feature_age_s", "flags")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_AGE_S_FIELD_NUMBER: _ClassVar[int]
    FEATURE_AGE_S_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    scores: _containers.ScalarMap[str, float]
    source: Source
    prediction_age_s: float
    feature_age_s: float
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_id: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ..., source: _Optional[_Union[Source, str]] = ..., prediction_age_s: _Optional[float] = ..., feature_age_s: _Optional[float] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "model_version", "prediction", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    prediction: Prediction
    request_id: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., prediction: _Optional[_Union[Prediction, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("model", "instances", "cache", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    cache: CacheMode
    request_id: str
    def __init__(self, model: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., cache: _Optional[_Union[CacheMode, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("model", "model_version", "predictions", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    request_id: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "version", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class TritonModel(_message.Message):
    __slots__ = ("name", "version", "input", "datatype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    input: str
    datatype: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., input: _Optional[str] = ..., datatype: _Optional[str] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("key", "namespace")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    key: str
    namespace: str
    def __init__(self, key: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class CachePolicy(_message.Message):
    __slots__ = ("ttl_s", "max_staleness_s", "max_age_s", "stale_while_revalidate_s")
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_S_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    STALE_WHILE_REVALIDATE_S_FIELD_NUMBER: _ClassVar[int]
    ttl_s: int
    max_staleness_s: float
    max_age_s: float
    stale_while_revalidate_s: float
    def __init__(self, ttl_s: _Optional[int] = ..., max_staleness_s: _Optional[float] = ..., max_age_s: _Optional[float] = ..., stale_while_revalidate_s: _Optional[float] = ...) -> None: ...

class FallbackPolicy(_message.Message):
    __slots__ = ("default_scores", "without_feature_store")
    class DefaultScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DEFAULT_SCORES_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_FEATURE_STORE_FIELD_NUMBER: _ClassVar[int]
    default_scores: _containers.ScalarMap[str, float]
    without_feature_store: str
    def __init__(self, default_scores: _Optional[_Mapping[str, float]] = ..., without_feature_store: _Optional[str] = ...) -> None: ...

class FeatureFreshness(_message.Message):
    __slots__ = ("max_age_s", "on_violation")
    MAX_AGE_S_FIELD_NUMBER: _ClassVar[int]
    ON_VIOLATION_FIELD_NUMBER: _ClassVar[int]
    max_age_s: float
    on_violation: str
    def __init__(self, max_age_s: _Optional[float] = ..., on_violation: _Optional[str] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("name", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "dtype", "min", "max", "default", "required")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    min: float
    max: float
    default: float
    required: bool
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., default: _Optional[float] = ..., required: bool = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "description", "served_version", "triton", "entity", "max_batch_size", "cache", "outputs", "features", "fallback", "feature_freshness")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SERVED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRITON_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FRESHNESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    served_version: str
    triton: TritonModel
    entity: Entity
    max_batch_size: int
    cache: CachePolicy
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    fallback: FallbackPolicy
    feature_freshness: FeatureFreshness
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., served_version: _Optional[str] = ..., triton: _Optional[_Union[TritonModel, _Mapping]] = ..., entity: _Optional[_Union[Entity, _Mapping]] = ..., max_batch_size: _Optional[int] = ..., cache: _Optional[_Union[CachePolicy, _Mapping]] = ..., outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., fallback: _Optional[_Union[FallbackPolicy, _Mapping]] = ..., feature_freshness: _Optional[_Union[FeatureFreshness, _Mapping]] = ...) -> None: ...
