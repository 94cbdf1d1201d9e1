import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VECTOR_STATUS_UNSPECIFIED: _ClassVar[VectorStatus]
    VECTOR_STATUS_OK: _ClassVar[VectorStatus]
    VECTOR_STATUS_UNKNOWN_USER: _ClassVar[VectorStatus]
    VECTOR_STATUS_UNAVAILABLE: _ClassVar[VectorStatus]
VECTOR_STATUS_UNSPECIFIED: VectorStatus
VECTOR_STATUS_OK: VectorStatus
VECTOR_STATUS_UNKNOWN_USER: VectorStatus
VECTOR_STATUS_UNAVAILABLE: VectorStatus

class GetUserFeaturesRequest(_message.Message):
    __slots__ = ("user_id", "features", "feature_set", "version")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    features: _containers.RepeatedScalarFieldContainer[str]
    feature_set: str
    version: int
    def __init__(self, user_id: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., feature_set: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class BatchGetUserFeaturesRequest(_message.Message):
    __slots__ = ("user_ids", "features", "feature_set", "version")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedScalarFieldContainer[str]
    feature_set: str
    version: int
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[str]] = ..., feature_set: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class FeatureRef(_message.Message):
    __slots__ = ("group", "name")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    group: str
    name: str
    def __init__(self, group: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("null_value", "double_value", "int64_value", "string_value", "bool_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: _struct_pb2.NullValue
    double_value: float
    int64_value: int
    string_value: str
    bool_value: bool
    def __init__(self, null_value: _Optional[_Union[_struct_pb2.NullValue, str]] = ..., double_value: _Optional[float] = ..., int64_value: _Optional[int] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class UserVector(_message.Message):
    __slots__ = ("user_id", "status", "values", "computed_at", "source_watermark", "cache_hit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    status: VectorStatus
    values: _containers.RepeatedCompositeFieldContainer[Value]
    computed_at: _timestamp_pb2.Timestamp
    source_watermark: str
    cache_hit: bool
    def __init__(self, user_id: _Optional[str] = ..., status: _Optional[_Union[VectorStatus, str]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_watermark: _Optional[str] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class GetUserFeaturesResponse(_message.Message):
    __slots__ = ("feature_set", "version", "as_of", "degraded", "degraded_reason", "features", "vector", "response_time_ms")
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    feature_set: str
    version: int
    as_of: _timestamp_pb2.Timestamp
    degraded: bool
    degraded_reason: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureRef]
    vector: UserVector
    response_time_ms: float
    def __init__(self, feature_set: _Optional[str] = ..., version: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureRef, _Mapping]]] = ..., vector: _Optional[_Union[UserVector, _Mapping]] = ..., response_time_ms: _Optional[float] = ...) -> None: ...

class Counts(_message.Message):
    __slots__ = ("ok", "unknown_user", "unavailable")
    OK_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_USER_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ok: int
    unknown_user: int
    unavailable: int
    def __init__(self, ok: _Optional[int] = ..., unknown_user: _Optional[int] = ..., unavailable: _Optional[int] = ...) -> None: ...

class BatchGetUserFeaturesResponse(_message.Message):
    __slots__ = ("feature_set", "version", "as_of", "degraded", "degraded_reason", "features", "results", "counts", "response_time_ms")
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    feature_set: str
    version: int
    as_of: _timestamp_pb2.Timestamp
    degraded: bool
    degraded_reason: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureRef]
    results: _containers.RepeatedCompositeFieldContainer[UserVector]
    counts: Counts
    response_time_ms: float
    def __init__(self, feature_set: _Optional[str] = ..., version: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureRef, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[UserVector, _Mapping]]] = ..., counts: _Optional[_Union[Counts, _Mapping]] = ..., response_time_ms: _Optional[float] = ...) -> None: ...
