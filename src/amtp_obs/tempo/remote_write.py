"""Prometheus remote-write 1.0 requests: ``prometheus.WriteRequest`` protobuf, snappy block format.

The message classes are built at runtime from a FileDescriptorProto in a private pool, so the
project ships no generated code and does not clash with any other ``prometheus`` proto module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CONTENT_TYPE = "application/x-protobuf"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": CONTENT_TYPE,
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "amtp-obs-tempo/2.4.1-amtp",
}

_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="amtp_prometheus_remote.proto", package="prometheus", syntax="proto3")

    def msg(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name

    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    msg("Label", [("name", 1, _F.TYPE_STRING, opt, None), ("value", 2, _F.TYPE_STRING, opt, None)])
    msg("Sample", [("value", 1, _F.TYPE_DOUBLE, opt, None), ("timestamp", 2, _F.TYPE_INT64, opt, None)])
    msg(
        "Exemplar",
        [
            ("labels", 1, _F.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("value", 2, _F.TYPE_DOUBLE, opt, None),
            ("timestamp", 3, _F.TYPE_INT64, opt, None),
        ],
    )
    msg(
        "TimeSeries",
        [
            ("labels", 1, _F.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, _F.TYPE_MESSAGE, rep, ".prometheus.Sample"),
            ("exemplars", 3, _F.TYPE_MESSAGE, rep, ".prometheus.Exemplar"),
        ],
    )
    msg("WriteRequest", [("timeseries", 1, _F.TYPE_MESSAGE, rep, ".prometheus.TimeSeries")])
    return f


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())
WriteRequest = message_factory.GetMessageClass(_pool.FindMessageTypeByName("prometheus.WriteRequest"))
TimeSeries = message_factory.GetMessageClass(_pool.FindMessageTypeByName("prometheus.TimeSeries"))


@dataclass
class Series:
    """One sample (and optional exemplars) of one series; labels include ``__name__``."""

    labels: Sequence[tuple[str, str]]
    value: float
    timestamp_ms: int
    exemplars: list[tuple[Sequence[tuple[str, str]], float, int]] = field(default_factory=list)


def encode(series: Iterable[Series], send_exemplars: bool = True) -> bytes:
    """Serialized, snappy-compressed WriteRequest body."""
    req = WriteRequest()
    for s in series:
        ts = req.timeseries.add()
        for name, value in sorted(s.labels):
            ts.labels.add(name=name, value=value)
        ts.samples.add(value=s.value, timestamp=s.timestamp_ms)
        if send_exemplars:
            for labels, value, t in s.exemplars:
                ex = ts.exemplars.add(value=value, timestamp=t)
                for name, lv in sorted(labels):
                    ex.labels.add(name=name, value=lv)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def decode(body: bytes) -> WriteRequest:
    """Inverse of :func:`encode` (for tests and debugging)."""
    req = WriteRequest()
    req.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return req
