"""A pickle reader for numpy data from elsewhere: it never lets numpy rebuild an array from raw state.

A pickle is a program. Refusing every global but numpy's own (the first pass) is not enough:
numpy's `_reconstruct`, `dtype`, `ndarray.__setstate__` and `scalar` trust the state they are given.
A `numpy.dtype` whose pickled state declares an object field but clears its "has objects" flag,
filled through `_reconstruct` + BUILD with raw bytes from the file, makes numpy read pointers from
the file (a crash, or worse); a `_reconstruct` never followed by BUILD leaves an uninitialised
buffer (heap contents end up in the prepared files); a zero-size dtype gives an array of 10**12
elements in 0 bytes.

`SafeNumpyUnpickler` (pure-Python `pickle._Unpickler`) resolves the same names as numpy pickles
use (numpy 1 and numpy 2 module names, `_codecs.encode`, `builtins.bytes`), but to stand-ins of its
own that only record what the file asks for:
- `numpy.dtype(code, align, copy)` + BUILD(state) -> `_DType`; resolved to `np.dtype(code)` only
  for plain codes: bool, (u)int 1-8 bytes, float 2/4/8 bytes, fixed-width str/bytes ("U", "S",
  itemsize from the state, > 0 and at most `MAX_ITEMSIZE`) and object ("O"). Structured, subarray,
  void, datetime and every other dtype are refused; fields and flags in the state are never used.
- `_reconstruct(ndarray, shape, typecode)` + BUILD((version, shape, dtype, fortran, data)) -> an
  array made by numpy from validated input only: `np.frombuffer(data, dtype, count)` with
  len(data) == prod(shape) * itemsize exactly, then reshaped (C or Fortran order); object arrays
  only from a list of exactly prod(shape) values, never from bytes. An array without BUILD is
  refused (no uninitialised memory).
- `_frombuffer(buffer, dtype, shape, order)` (protocol 5) and `scalar(dtype, bytes)`: the same checks.
- `_codecs.encode(text, "latin1")` and `bytes()` (how protocol <= 2 pickles write bytes; an empty
  array's data is `bytes()`): only these forms.
Limits (PickleRefused naming what was exceeded): `MAX_OPS` opcodes, `MAX_ARRAY_BYTES` bytes over all
arrays built (a buffer referenced many times counts every time), `MAX_NDIM` dimensions,
`MAX_ELEMENTS` elements per array (whatever the itemsize), integers of at most `MAX_LONG_BYTES`
bytes, and a result nested at most `MAX_DEPTH` deep without cycles. Opcodes that build arbitrary
objects (INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT*) or persistent ids are refused; BUILD is accepted on
the stand-ins only.
"""

from __future__ import annotations

import _compat_pickle
import math
import pickle
import re
import struct
from typing import BinaryIO

import numpy as np

MAX_OPS = 20_000_000
MAX_ARRAY_BYTES = 16 << 30
MAX_ELEMENTS = 4 << 30
MAX_NDIM = 16
MAX_DEPTH = 32
MAX_ITEMSIZE = 1 << 16
MAX_LONG_BYTES = 4096
_PLAIN = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
_CODE = re.compile(r"([biufUSO])(\d{1,9})")


class PickleRefused(pickle.UnpicklingError):
    """The pickle asks for something this reader does not do (args[0]: what, for messages)."""


class RefusedGlobal(PickleRefused):
    """The pickle names a global that numpy arrays do not need (args[0]: "module.name")."""


class _NdarrayClass:
    """Stands for `numpy.ndarray` as `_reconstruct`'s first argument; calling it is refused."""

    def __call__(self, *args, **kwargs):
        raise PickleRefused("numpy.ndarray called directly (an array with uninitialised memory)")


_NDARRAY = _NdarrayClass()


class _DType:
    """What `numpy.dtype(code, align, copy)` + BUILD(state) asked for; `resolve()` -> np.dtype."""

    def __init__(self, code=None, align=False, copy=True):
        self.code, self.state = code, None

    def __setstate__(self, state):
        if self.state is not None:
            raise PickleRefused("dtype state set twice")
        if not isinstance(state, tuple):
            raise PickleRefused(f"dtype state {type(state).__name__}; expected a tuple")
        self.state = state

    def resolve(self) -> np.dtype:
        code = self.code
        if isinstance(code, bytes):
            code = code.decode("latin1")
        m = _CODE.fullmatch(code) if isinstance(code, str) else None
        if m is None:
            raise PickleRefused(f"dtype {code!r}: only bool, integer, float, str, bytes and object arrays are read")
        kind = m.group(1)
        state = self.state or ()
        # state: (version, endian, subarray, names, fields, elsize, alignment, flags[, metadata])
        if len(state) >= 5 and any(x is not None for x in state[2:5]):
            raise PickleRefused(f"dtype {code!r} with fields or a subarray (a structured dtype); refused")
        endian = state[1] if len(state) >= 2 else "|"
        if endian not in ("<", ">", "|", "="):
            raise PickleRefused(f"dtype {code!r}: byte order {endian!r}; expected '<', '>', '|' or '='")
        if kind == "O":
            return np.dtype(object)
        if kind in "US":
            elsize = state[5] if len(state) >= 6 and isinstance(state[5], int) and state[5] > 0 else int(m.group(2))
            unit = 4 if kind == "U" else 1
            if not 0 < elsize <= MAX_ITEMSIZE or elsize % unit:
                raise PickleRefused(f"dtype {code!r}: item size {elsize}; expected 1..{MAX_ITEMSIZE} bytes")
            dt = np.dtype(f"{kind}{elsize // unit}")
        else:
            if code not in _PLAIN:
                raise PickleRefused(f"dtype {code!r}: only bool, integer, float, str, bytes and object arrays are read")
            dt = np.dtype(code)
        if endian in "<>" and (dt.itemsize > 1 or kind == "U") and kind != "S":
            dt = dt.newbyteorder(endian)
        return dt


def _dtype_of(value, where: str) -> np.dtype:
    if not isinstance(value, _DType):
        raise PickleRefused(f"{where}: dtype {type(value).__name__}; expected a numpy dtype")
    return value.resolve()


def _shape_of(value, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or len(value) > MAX_NDIM or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
        raise PickleRefused(f"{where}: shape {value!r}; expected at most {MAX_NDIM} non-negative integers")
    shape = tuple(value)
    if math.prod(shape) > MAX_ELEMENTS:
        raise PickleRefused(f"{where}: shape {shape} has more than {MAX_ELEMENTS} elements")
    return shape


class _Array:
    """What `_reconstruct(ndarray, shape, typecode)` + BUILD(state) asked for; `.array` once built."""

    def __init__(self, unpickler: "SafeNumpyUnpickler"):
        self._unpickler, self.array = unpickler, None

    def __setstate__(self, state):
        if self.array is not None:
            raise PickleRefused("array state set twice")
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, fortran, data)
        if not isinstance(state, tuple) or len(state) != 4:
            raise PickleRefused(f"array state {type(state).__name__} of length {len(state) if isinstance(state, tuple) else '?'}; "
                                f"expected (version, shape, dtype, is_fortran, data)")
        shape, dtype, fortran, data = state
        self.array = self._unpickler.build_array(_shape_of(shape, "array"), _dtype_of(dtype, "array"),
                                                 "F" if fortran else "C", data)


class SafeNumpyUnpickler(pickle._Unpickler):
    """Reads dicts, lists, tuples, str, bytes, numbers and plain numpy arrays; nothing else runs."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, *, max_ops: int = MAX_OPS, max_array_bytes: int = MAX_ARRAY_BYTES):
        super().__init__(file, encoding="latin1")
        self.ops, self.max_ops = 0, max_ops
        self.array_bytes, self.max_array_bytes = 0, max_array_bytes

    # --- globals ---------------------------------------------------------------------------------
    def find_class(self, module: str, name: str):
        # Python 2 names (__builtin__, copy_reg, ...) -> what Python 3 would import
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module.replace("numpy.core.", "numpy._core."), name)
        target = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): _DType,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "scalar"): self._scalar,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
            ("_codecs", "encode"): _latin1_encode,
            ("builtins", "bytes"): _empty_bytes,
        }.get(key)
        if target is None:
            raise RefusedGlobal(f"{module}.{name}")
        return target

    def persistent_load(self, pid):
        raise PickleRefused("persistent ids")

    # --- stand-ins -------------------------------------------------------------------------------
    def _reconstruct(self, cls, shape=None, typecode=None):
        if cls is not _NDARRAY:
            raise PickleRefused(f"_reconstruct of {type(cls).__name__}; only numpy.ndarray is read")
        return _Array(self)

    def _scalar(self, dtype, data=None):
        dt = _dtype_of(dtype, "scalar")
        if dt.hasobject:
            raise PickleRefused("an object scalar; expected a number")
        data = _raw_bytes(data, "scalar")
        if len(data) != dt.itemsize:
            raise PickleRefused(f"scalar of dtype {dt}: {len(data)} bytes; expected {dt.itemsize}")
        return np.frombuffer(data, dt, count=1)[0]

    def _frombuffer(self, buffer, dtype, shape, order):
        if order not in ("C", "F"):
            raise PickleRefused(f"_frombuffer order {order!r}; expected 'C' or 'F'")
        return self.build_array(_shape_of(shape, "_frombuffer"), _dtype_of(dtype, "_frombuffer"), order, buffer)

    def build_array(self, shape: tuple[int, ...], dt: np.dtype, order: str, data) -> np.ndarray:
        """An array of `shape`, made by numpy from `data` checked against shape x itemsize."""
        count = math.prod(shape)
        nbytes = count * (8 if dt.hasobject else dt.itemsize)
        self.array_bytes += nbytes
        if self.array_bytes > self.max_array_bytes:
            raise PickleRefused(f"arrays of more than {self.max_array_bytes} bytes in all")
        if dt.hasobject:
            if not isinstance(data, list) or len(data) != count:
                raise PickleRefused(f"object array of shape {shape}: data {type(data).__name__}"
                                    f"{f' of {len(data)} items' if isinstance(data, list) else ''}; "
                                    f"expected a list of {count} values")
            out = np.empty(count, dtype=object)
            for i, value in enumerate(data):
                out[i] = materialize(value, 1)
            return out.reshape(shape, order=order)
        data = _raw_bytes(data, "array")
        if len(data) != nbytes:
            raise PickleRefused(f"array of shape {shape} and dtype {dt}: {len(data)} bytes of data; "
                                f"expected {count} x {dt.itemsize} = {nbytes}")
        if count == 0:
            return np.zeros(shape, dtype=dt, order=order)
        return np.frombuffer(data, dtype=dt, count=count).reshape(shape, order=order)

    # --- opcodes ---------------------------------------------------------------------------------
    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (_DType, _Array)):
            raise PickleRefused(f"BUILD on {type(inst).__name__}; only numpy arrays and dtypes are rebuilt")
        inst.__setstate__(state)

    def load_long4(self):
        n, = struct.unpack("<i", self.read(4))
        if n > MAX_LONG_BYTES:
            raise PickleRefused(f"an integer of {n} bytes; expected at most {MAX_LONG_BYTES}")
        self.append(pickle.decode_long(self.read(n)))

    def load_long1(self):
        n = self.read(1)[0]
        if n > MAX_LONG_BYTES:
            raise PickleRefused(f"an integer of {n} bytes; expected at most {MAX_LONG_BYTES}")
        self.append(pickle.decode_long(self.read(n)))

    def _refuse(self):
        raise PickleRefused("an opcode that builds arbitrary objects (INST/OBJ/NEWOBJ/EXT)")

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.LONG4[0]] = load_long4
    dispatch[pickle.LONG1[0]] = load_long1
    for _op in (pickle.INST, pickle.OBJ, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _refuse
    del _op

    def load(self):
        """Unpickle with an opcode budget, then replace every stand-in by its array."""
        return materialize(super().load(), 0)


def _counted(function):
    def step(self):
        self.ops += 1
        if self.ops > self.max_ops:
            raise PickleRefused(f"more than {self.max_ops} pickle opcodes")
        function(self)
    return step


SafeNumpyUnpickler.dispatch = {k: _counted(f) for k, f in SafeNumpyUnpickler.dispatch.items()}


def _latin1_encode(text, encoding="latin1", errors="strict"):
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise PickleRefused(f"_codecs.encode with {type(text).__name__} and {encoding!r}; expected text and 'latin1'")
    return text.encode("latin1")


def _empty_bytes(*args):
    if args:
        raise PickleRefused("bytes() with arguments; expected bytes() (an empty buffer)")
    return b""


def _raw_bytes(data, where: str) -> bytes:
    if isinstance(data, str):  # Python 2 str, read with encoding="latin1"
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, pickle.PickleBuffer):
        return bytes(data.raw())
    raise PickleRefused(f"{where} data {type(data).__name__}; expected bytes")


def materialize(obj, depth: int, memo: dict | None = None):
    """`obj` with every built stand-in replaced by its array; refuses unbuilt arrays, bare dtypes,
    nesting deeper than MAX_DEPTH, a structure that contains itself, and values of other types.
    A container referenced many times (the pickle memo) is converted once (`memo`: id -> result)."""
    if isinstance(obj, (str, bytes, bool, int, float, complex, type(None), np.generic, np.ndarray)):
        return obj
    if isinstance(obj, _Array):
        if obj.array is None:
            raise PickleRefused("an array without data (_reconstruct with no BUILD: uninitialised memory)")
        return obj.array
    if depth > MAX_DEPTH:
        raise PickleRefused(f"data nested deeper than {MAX_DEPTH} levels")
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        if memo[key] is _IN_PROGRESS:
            raise PickleRefused("a structure that contains itself")
        return memo[key][1]
    memo[key] = _IN_PROGRESS
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, bytes, int, float, bool, type(None))):
                raise PickleRefused(f"a dict key of type {type(k).__name__}")
            out[k] = materialize(v, depth + 1, memo)
    elif isinstance(obj, list):
        out = [materialize(v, depth + 1, memo) for v in obj]
    elif isinstance(obj, tuple):
        out = tuple(materialize(v, depth + 1, memo) for v in obj)
    elif isinstance(obj, bytearray):
        out = bytes(obj)
    else:
        raise PickleRefused(f"a value of type {type(obj).__name__}; expected numpy arrays, dicts, lists, strings and numbers")
    memo[key] = (obj, out)  # obj kept alive so that its id is not reused
    return out


_IN_PROGRESS = object()
