"""Reads one tensor of a safetensors file into numpy, without the safetensors package (Debian's python3-torch has none)."""
import json, struct

import numpy as np

DTYPES = {"F32": np.float32, "I32": np.int32, "I64": np.int64, "U32": np.uint32, "U16": np.uint16}


def read_tensor(path, name):
    """The tensor and the file's __metadata__ (a dict, possibly empty)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    t = header[name]
    b, e = t["data_offsets"]
    return np.frombuffer(data[b:e], dtype=DTYPES[t["dtype"]]).reshape(t["shape"]), header.get("__metadata__", {})
