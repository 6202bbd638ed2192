"""Lossless compaction of a quantized .tflite: each distinct quantization vector stored once.

A full-integer MobileNetV2 carries per-channel quantization for every convolution's weights AND
bias: a float32 scale plus an **int64** zero point per output channel, ~34k channels in all. The
TFLite converter writes a separate vector for every tensor although most of them are equal (all
per-channel weight zero points are 0, and many layers share a channel count): about 410 KB of a
2.7 MB int8 file, which is what kept the int8 file above 0.30x of the float32 one.

FlatBuffers lets several tables point at one vector (the format is a DAG of offsets, and the
verifier only checks bounds), so re-serializing the model with identical vectors shared changes
no value the interpreter reads: tensors, quantization parameters and outputs are bit-identical
(``tests/test_convert.py`` checks that). Buffers keep the 16-byte alignment the converter gives
them. Workstation only: it uses the schema module that ships with TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The converter's own alignment for constant buffers (XNNPACK and NEON loads like it).
BUFFER_ALIGNMENT = 16
_FIELDS = (("min", np.float32), ("max", np.float32), ("scale", np.float32), ("zeroPoint", np.int64))


def _vector(builder: Any, values: Any, dtype: type, alignment: int, cache: dict | None) -> int:
    """A vector written once per distinct content when ``cache`` is given."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=dtype).reshape(-1)).astype(np.dtype(dtype).newbyteorder("<"))
    key = (arr.dtype.str, arr.tobytes())
    if cache is not None and key in cache:
        return cache[key]
    payload = key[1]
    builder.StartVector(arr.itemsize, arr.size, max(alignment, arr.itemsize))
    builder.head -= len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    builder.vectorNumElems = arr.size
    offset = builder.EndVector()
    if cache is not None:
        cache[key] = offset
    return offset


def compact_quantized(model: bytes) -> bytes:
    """``model`` re-serialized with identical quantization vectors shared (no value changes)."""
    from tensorflow.lite.python import schema_py_generated as fb  # type: ignore[attr-defined]

    shared: dict = {}

    class SharedQuantization(fb.QuantizationParametersT):
        def Pack(self, builder):  # noqa: N802 - the generated API's name
            vecs = {name: _vector(builder, getattr(self, name), dt, 1, shared)
                    for name, dt in _FIELDS if getattr(self, name) is not None}
            details = self.details.Pack(builder) if self.details is not None else None
            fb.QuantizationParametersStart(builder)
            if "min" in vecs:
                fb.QuantizationParametersAddMin(builder, vecs["min"])
            if "max" in vecs:
                fb.QuantizationParametersAddMax(builder, vecs["max"])
            if "scale" in vecs:
                fb.QuantizationParametersAddScale(builder, vecs["scale"])
            if "zeroPoint" in vecs:
                fb.QuantizationParametersAddZeroPoint(builder, vecs["zeroPoint"])
            fb.QuantizationParametersAddDetailsType(builder, self.detailsType)
            if details is not None:
                fb.QuantizationParametersAddDetails(builder, details)
            fb.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            return fb.QuantizationParametersEnd(builder)

    class AlignedBuffer(fb.BufferT):
        def Pack(self, builder):  # noqa: N802
            data = None
            if self.data is not None:
                data = _vector(builder, self.data, np.uint8, BUFFER_ALIGNMENT, None)
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            fb.BufferAddOffset(builder, self.offset)
            fb.BufferAddSize(builder, self.size)
            return fb.BufferEnd(builder)

    import flatbuffers

    if model[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    obj = fb.ModelT.InitFromObj(fb.Model.GetRootAs(bytearray(model), 0))
    if any(b.offset for b in obj.buffers if b is not None):
        return model  # buffers stored outside the flatbuffer (>2 GB models): leave it alone
    for sub in obj.subgraphs:
        for tensor in sub.tensors:
            if tensor.quantization is not None:
                tensor.quantization.__class__ = SharedQuantization
    for buf in obj.buffers:
        buf.__class__ = AlignedBuffer
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    out = bytes(builder.Output())
    return out if len(out) < len(model) else model
