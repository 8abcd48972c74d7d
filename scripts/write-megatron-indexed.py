#!/usr/bin/env python3
"""An independent writer of Megatron's indexed dataset format (MMIDIDX), for webtron's tests.

Written from the format's description (Megatron-LM's megatron/core/datasets/readme.md: header,
version, dtype code, sequence count, document count, then sequence lengths, sequence byte pointers
and document indices), with numpy, sharing no code with webtron's reader.

usage: write-megatron-indexed.py SPEC.json
SPEC: {"prefix": "/tmp/x", "dtype": "uint16" | "int32", "documents": [[[1, 2, 3], [4]], [[5, 6]]]}
(each document a list of sequences, each sequence a list of token ids)
"""
import json
import struct
import sys

import numpy as np

CODES = {"uint8": 1, "int8": 2, "int16": 3, "int32": 4, "int64": 5, "float64": 6, "float32": 7, "uint16": 8}

spec = json.load(open(sys.argv[1]))
dtype = np.dtype(spec["dtype"])
sequences = [np.asarray(s, dtype=dtype) for doc in spec["documents"] for s in doc]
lengths = np.array([len(s) for s in sequences], dtype=np.int32)
pointers = np.zeros(len(sequences), dtype=np.int64)
if len(sequences) > 1:
    pointers[1:] = np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize)
doc_index = np.zeros(len(spec["documents"]) + 1, dtype=np.int64)
doc_index[1:] = np.cumsum([len(doc) for doc in spec["documents"]])

with open(spec["prefix"] + ".bin", "wb") as f:
    for s in sequences:
        f.write(s.astype(dtype.newbyteorder("<")).tobytes(order="C"))
with open(spec["prefix"] + ".idx", "wb") as f:
    f.write(b"MMIDIDX\x00\x00")
    f.write(struct.pack("<Q", 1))
    f.write(struct.pack("<B", CODES[spec["dtype"]]))
    f.write(struct.pack("<Q", len(sequences)))
    f.write(struct.pack("<Q", len(doc_index)))
    f.write(lengths.astype("<i4").tobytes(order="C"))
    f.write(pointers.astype("<i8").tobytes(order="C"))
    f.write(doc_index.astype("<i8").tobytes(order="C"))
