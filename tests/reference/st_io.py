#!/usr/bin/env python3
"""st_io.py — the safetensors reader and writer of the reference scripts (NumPy only).

twin.py re-exports them with torch tensors (twin.st_read, twin.st_write); the scripts that work
in NumPy or convert themselves (ensemble_ref.py, combiner_ref.py, distill_ref.py,
distill_hidden_ref.py) import them from here:

    from st_io import read, write
    tensors, meta = read("in.safetensors")        # {name: native-order NumPy copy}, metadata
    write("out.safetensors", {"loss": np.float32(...) array}, meta=None)

The format: an 8-byte little-endian header length N, N bytes of JSON header, then the data. The
reader checks the layout strictly (offsets that fit each shape, tensors that tile the data); the
writer stores each array in its own dtype (convert float64 results to float32 first when F32 is
wanted), 8-byte aligns the data, and replaces the file atomically.
"""
import json
import os
import struct
import sys

try:
    import numpy as np
except ImportError as e:  # the C test shows this message when the reference cannot run
    sys.stderr.write("st_io.py: needs NumPy (%s); on Debian/Ubuntu: apt-get install python3-numpy\n" % e)
    sys.exit(1)


def fail(msg):
    sys.stderr.write("%s: %s\n" % (os.path.basename(sys.argv[0]) or "st_io.py", msg))
    sys.exit(1)


DTYPES = {
    "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"), "I64": np.dtype("<i8"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
NP_TO_ST = {v.str: k for k, v in DTYPES.items()}


def read(path):
    """Returns ({name: NumPy array}, metadata dict), checking the layout against the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        fail("%s: %s" % (path, e))
    if len(raw) < 8:
        fail("%s: too short for a safetensors header" % path)
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        fail("%s: header length %d exceeds the file" % (path, n))
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        fail("%s: bad JSON header (%s)" % (path, e))
    if not isinstance(header, dict):
        fail("%s: header is not a JSON object" % path)
    meta = header.pop("__metadata__", None) or {}
    data = memoryview(raw)[8 + n:]
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            dt = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            fail("%s: tensor %r has a bad or unsupported entry %r" % (path, name, info))
        numel = 1
        for d in shape:
            numel *= d
        if not (0 <= begin <= end <= len(data)) or end - begin != numel * dt.itemsize:
            fail("%s: tensor %r: offsets [%d, %d) do not fit its shape %s or the file"
                 % (path, name, begin, end, shape))
        arr = np.frombuffer(data[begin:end], dtype=dt).reshape(shape)
        tensors[name] = arr.astype(dt.newbyteorder("="))  # a native-order copy
        spans.append((begin, end))
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            fail("%s: tensors do not tile the data buffer (hole or overlap at byte %d)" % (path, begin))
        pos = end
    if pos != len(data):
        fail("%s: %d bytes after the last tensor" % (path, len(data) - pos))
    return tensors, meta


def write(path, tensors, meta=None):
    """Writes {name: array or torch tensor} in insertion order (atomically: temporary file, then
    rename), each in its own dtype."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().cpu().contiguous().numpy() if hasattr(t, "detach") else np.ascontiguousarray(t)
        a = a.astype(a.dtype.newbyteorder("<"))
        b = a.tobytes()
        header[name] = {"dtype": NP_TO_ST[a.dtype.str], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        header["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)  # the data buffer starts 8-byte aligned
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
