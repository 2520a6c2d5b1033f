"""Reading the book's label files by walking their pickle opcodes: nothing in the file is executed.

The book's ground truth is `np.save` of a dict, which NumPy stores as a `.npy` header for a 0-d object
array followed by a pickle of that array. Unpickling runs whatever functions the stream names, and even
NumPy's own ones are enough to crash the process: a dtype whose pickled flags hide that it holds Python
objects lets `_frombuffer` or `_reconstruct` turn eight bytes of the file into a pointer. So the pickle is
never unpickled. `pickletools.genops` decodes its opcodes without running any, and a small stack machine
accepts only what NumPy writes for such a dict (protocols 2 to 5, numpy 1.x and 2.x names):

- the outer 0-d object array, whose one element is the dict;
- string keys, and values that are plain arrays (or None, numbers, strings and bytes, which the label
  checks then refuse by name);
- an array rebuilt by `_reconstruct` + its state, or by protocol 5's `_frombuffer`, from a dtype named by
  a plain descr string (`b1`, `i1`..`i8`, `u1`..`u8`, `f2`..`f8`, with its byte order) and a bytes buffer
  whose length is exactly the shape's element count times the item size. The dtype is made here with
  `np.dtype(descr)`; of the dtype's pickled state only the byte order is read, and any other state (flags,
  fields, names, sizes) refuses the file.

Anything else ends with one line naming the file and what it held, before any array is made. Memory
stays bounded by the file's size: every buffer comes from the file, reads are capped at the bytes left in
it, and the bytes the walk builds from them (arrays, protocol 2's encoded bytes) may total at most
`MATERIALISED_PER_FILE_BYTE` times the file's size plus `MATERIALISED_SLACK`, however often the stream
refers to one buffer again. The walk is a loop, never a recursion, and nesting is capped at what NumPy
writes.
"""

import itertools
import math
import os
import pickletools
import re
from collections.abc import Callable

import numpy as np

from segmentation.errors import DatasetError

# The globals NumPy's pickle of a dict of arrays names, under numpy 1.x (numpy.core) and 2.x (numpy._core).
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
}

# The opcodes NumPy's pickles of a dict of arrays use (protocols 2 to 5), and the few small ones for
# numbers and constants that a value the label checks refuse by name may hold.
_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
    "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "APPEND", "APPENDS",
    "EMPTY_DICT", "SETITEM", "SETITEMS", "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8",
})

# Plain numeric and boolean dtypes, as the pickle's descr string names them; their byte order comes from
# the dtype's state ('|' for one byte, '<' or '>' for more).
_PLAIN_DESCR = re.compile(r"(b1|[iu][1248]|f[248])")
# Dtypes a mask may wrongly have that are refused by name (the label checks' own words), never built.
_TEXT_DESCR = re.compile(r"([US])([0-9]{1,6})")
_OBJECT_DESCR = ("O4", "O8")
# A plain dtype's pickled state as NumPy writes it, after its byte order.
_PLAIN_STATE = (None, None, None, -1, -1, 0)
# NumPy's flags of the object dtype (NPY_OBJECT_DTYPE_FLAGS), the outer array's only.
_OBJECT_FLAGS = 63
# NumPy writes at most 4 nested marks and tuples 3 deep (the outer array's state); numpy's own limit on
# dimensions is 64 (32 in numpy 1.x).
MAX_NESTING = 16
MAX_DIMENSIONS = 32
# Data shorter than this may be a shared constant object (b"", one-byte bytes), referred to again later.
_SHARED_DATA_LENGTH = 2
# How many of the newest memo entries may hold an array's data and state (see `_forget`).
_RECENT_MEMO_ENTRIES = 16
# The bytes a walk may build, per byte of the file, plus a constant: NumPy's own files build each buffer
# once as an array, and protocol 2's once more as the bytes encoded from its text; a stream referring to one
# buffer again and again (an old memo entry) is refused once it passes this, however cheap its file.
MATERIALISED_PER_FILE_BYTE = 2
MATERIALISED_SLACK = 1 << 20


class _Refused(Exception):
    """The stream holds something NumPy's pickle of a dict of arrays never does; the message says what."""


class _NotAMask(Exception):
    """An array's dtype is text, which no mask has; the message ends a sentence that starts "a mask"."""


class _ForeignGlobal(Exception):
    """The stream names a global outside `_GLOBALS`."""

    def __init__(self, qualified_name: str):
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


class _Global:
    """One of NumPy's functions or classes the stream named; only ever compared, never called."""

    def __init__(self, kind: str):
        self.kind = kind


class _Dtype:
    """A dtype being rebuilt: its descr string, then (after BUILD) the checked `np.dtype`."""

    def __init__(self, descr: str):
        self.descr = descr
        self.dtype: np.dtype | None = None
        self.is_object = False


class _ArrayStub:
    """An array `_reconstruct` started; BUILD gives it its shape, dtype and data, and `value` its result.

    Args:
        outer: bool. Whether it is the stream's first array, the object array np.save makes of the dict
            (the only one that may have the object dtype).
    """

    def __init__(self, outer: bool):
        self.outer = outer
        self.value: object = None
        self.built = False


class _ObjectArray:
    """The outer object array: its shape and elements (a dict, for the book's files)."""

    def __init__(self, shape: tuple, items: list):
        self.shape = shape
        self.items = items


class _Tuple(tuple):
    """A tuple from the stream, with its nesting depth."""

    depth = 1


class _Forgotten:
    """Stands in the memo for array data already read (see `_forget`)."""


_FORGOTTEN = _Forgotten()

# Values a dict or list may hold besides arrays: the label checks refuse them by name.
_LEAVES = str | bytes | bytearray | int | float | None


class _BoundedReader:
    """A file read no further than its size: a length in the stream cannot make a read allocate more."""

    def __init__(self, file, size: int):
        self._file = file
        self._end = size

    def read(self, count: int = -1) -> bytes:
        left = max(0, self._end - self._file.tell())
        return self._file.read(left if count < 0 else min(count, left))

    def readline(self) -> bytes:
        return self._file.readline(max(0, self._end - self._file.tell()))

    def tell(self) -> int:
        return self._file.tell()


def _describe_pickled_value(value: object) -> str:
    """A short name for what the stream put somewhere (never its whole repr: it may be huge or deep)."""
    if isinstance(value, str | bytes | bytearray):
        shown = repr(value[:20])
        return f"{type(value).__name__} {shown}{'...' if len(value) > 20 else ''}"
    if isinstance(value, _Global):
        return f"NumPy's {value.kind}"
    if isinstance(value, _Dtype):
        return f"a dtype {value.descr[:20]!r}"
    if isinstance(value, _ArrayStub):
        return "an unfinished array"
    if isinstance(value, _ObjectArray):
        return "an object array"
    if isinstance(value, _Tuple):
        return "tuple"
    return type(value).__name__


class _Walker:
    """The stack machine over one pickle stream.

    Args:
        on_array: callable. Gets each plain array, read-only over the file's bytes, and returns what
            stands for it in the result (the array itself, a copy, or a summary).
        max_bytes: int. The most bytes the arrays and encoded bytes built may total (see
            `MATERIALISED_PER_FILE_BYTE`).
    """

    def __init__(self, on_array: Callable[[np.ndarray], object], max_bytes: int):
        self._on_array = on_array
        self._max_bytes = max_bytes
        self._bytes_built = 0
        self._stack: list = []
        self._marks: list[int] = []
        self._memo: dict[int, object] = {}
        self._arrays_started = 0

    # === Stack ===
    def _pop(self, count: int = 1) -> list:
        floor = self._marks[-1] if self._marks else 0
        if len(self._stack) - count < floor:
            raise _Refused("an opcode takes more values than the stream put before it")
        values = self._stack[len(self._stack) - count:]
        del self._stack[len(self._stack) - count:]
        return values

    def _pop_mark(self) -> list:
        if not self._marks:
            raise _Refused("an opcode needs a MARK the stream did not put")
        start = self._marks.pop()
        values = self._stack[start:]
        del self._stack[start:]
        return values

    def _top(self) -> object:
        floor = self._marks[-1] if self._marks else 0
        if len(self._stack) <= floor:
            raise _Refused("an opcode needs a value the stream did not put")
        return self._stack[-1]

    def _tuple(self, items: list) -> _Tuple:
        depth = 1 + max((item.depth for item in items if isinstance(item, _Tuple)), default=0)
        if depth > MAX_NESTING:
            raise _Refused(f"tuples nested deeper than {MAX_NESTING}")
        made = _Tuple(items)
        made.depth = depth
        return made

    def _memo_get(self, index: int) -> object:
        if index not in self._memo:
            raise _Refused(f"a reference to memo entry {index}, which the stream never stored")
        value = self._memo[index]
        if value is _FORGOTTEN:
            raise _Refused("a second reference to an array's data, which NumPy never writes")
        if isinstance(value, _ArrayStub):
            if not value.built:
                raise _Refused("a reference to an array inside itself")
            return value.value
        return value

    def _build_bytes(self, count: int) -> None:
        """Counts `count` bytes about to be built, refusing the stream once they pass `max_bytes` in all."""
        self._bytes_built += count
        if self._bytes_built > self._max_bytes:
            raise _Refused(
                f"data for more bytes than its file's size allows ({self._bytes_built} bytes built so far, at "
                f"most {self._max_bytes}): it refers to the same buffer again and again"
            )

    def _forget(self, *values: object) -> None:
        """Drops the memo's references to an array's data and state once the array is read.

        The memo holds every buffer the stream stored, so without this each mask's raw data would stay
        in memory until the end of the file. Its data and state are the newest entries when the array
        is built, and NumPy never refers to them again.
        """
        # A buffer this short may be one of Python's shared constants (b"", a one-byte bytes), which a
        # later array refers to again.
        targets = [value for value in values if not isinstance(value, str | bytes | bytearray)
                   or len(value) >= _SHARED_DATA_LENGTH]
        recent = list(itertools.islice(reversed(self._memo.items()), _RECENT_MEMO_ENTRIES))
        for index, value in recent:
            if any(value is target for target in targets):
                self._memo[index] = _FORGOTTEN

    # === Opcodes ===
    def step(self, name: str, argument: object) -> None:
        """Applies one opcode."""
        if name not in _OPCODES:
            raise _Refused(f"the pickle opcode {name}, which NumPy never writes for a dict of arrays")
        if name == "PROTO":
            if not 2 <= argument <= 5:
                raise _Refused(f"pickle protocol {argument}; NumPy writes 2 to 5")
        elif name in ("FRAME", "STOP"):
            pass
        elif name == "MARK":
            if len(self._marks) >= MAX_NESTING:
                raise _Refused(f"marks nested deeper than {MAX_NESTING}")
            self._marks.append(len(self._stack))
        elif name == "GLOBAL":
            module, _, attribute = argument.partition(" ")
            self._stack.append(self._global(module, attribute))
        elif name == "STACK_GLOBAL":
            module, attribute = self._pop(2)
            if not isinstance(module, str) or not isinstance(attribute, str):
                raise _Refused("a global named by values that are not strings")
            self._stack.append(self._global(module, attribute))
        elif name in ("BINPUT", "LONG_BINPUT"):
            self._memo[argument] = self._top()
        elif name == "MEMOIZE":
            self._memo[len(self._memo)] = self._top()
        elif name in ("BINGET", "LONG_BINGET"):
            self._stack.append(self._memo_get(argument))
        elif name == "EMPTY_TUPLE":
            self._stack.append(self._tuple([]))
        elif name == "TUPLE":
            self._stack.append(self._tuple(self._pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            self._stack.append(self._tuple(self._pop(int(name[-1]))))
        elif name == "EMPTY_LIST":
            self._stack.append([])
        elif name in ("APPEND", "APPENDS"):
            items = self._pop(1) if name == "APPEND" else self._pop_mark()
            target = self._top()
            if not isinstance(target, list):
                raise _Refused(f"{name} to {_describe_pickled_value(target)}, not a list")
            for item in items:
                if not isinstance(item, dict | _LEAVES) and not self._is_array(item):
                    raise _Refused(f"a list holding {_describe_pickled_value(item)}")
            target.extend(items)
        elif name == "EMPTY_DICT":
            self._stack.append({})
        elif name in ("SETITEM", "SETITEMS"):
            items = self._pop(2) if name == "SETITEM" else self._pop_mark()
            target = self._top()
            if not isinstance(target, dict) or len(items) % 2:
                raise _Refused(f"{name} to {_describe_pickled_value(target)}, not a dict")
            for key, value in zip(items[::2], items[1::2]):
                if not isinstance(key, str):
                    raise _Refused(f"a dict key that is {_describe_pickled_value(key)}, not an image filename")
                if not isinstance(value, _LEAVES) and not self._is_array(value):
                    raise _Refused(f"the value of key {key[:80]!r} is {_describe_pickled_value(value)}, not an array")
                target[key] = value
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            self._stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name == "REDUCE":
            function, arguments = self._pop(2)
            self._stack.append(self._reduce(function, arguments))
        elif name == "BUILD":
            (state,) = self._pop(1)
            target = self._top()
            self._stack[-1] = self._build(target, state)
        else:  # numbers, strings and bytes
            self._stack.append(argument)

    def result(self) -> object:
        """The value the stream's STOP returns: the outer array's element."""
        if self._marks or len(self._stack) != 1 or not isinstance(self._stack[0], _ObjectArray):
            raise _Refused("a stream that does not end with one object array")
        array = self._stack[0]
        if array.shape != () or len(array.items) != 1:
            raise _Refused(f"an object array of shape {array.shape}, not the 0-d array np.save makes of a dict")
        return array.items[0]

    @staticmethod
    def _is_array(value: object) -> bool:
        # Whatever `on_array` returned; stubs and the outer array are not values.
        return not isinstance(value, _Global | _Dtype | _ArrayStub | _ObjectArray | _Tuple | list | dict)

    def _global(self, module: str, attribute: str) -> _Global:
        kind = _GLOBALS.get((module, attribute))
        if kind is None:
            raise _ForeignGlobal(f"{module[:80]}.{attribute[:80]}")
        return _Global(kind)

    def _reduce(self, function: object, arguments: object) -> object:
        if not isinstance(function, _Global) or not isinstance(arguments, _Tuple):
            raise _Refused(f"a call of {_describe_pickled_value(function)}")
        kind = function.kind
        if kind == "dtype":
            if len(arguments) != 3 or not isinstance(arguments[0], str) or arguments[1:] != (False, True):
                raise _Refused("a dtype made from other arguments than NumPy's")
            return _Dtype(arguments[0])
        if kind == "reconstruct":
            if (len(arguments) != 3 or not isinstance(arguments[0], _Global) or arguments[0].kind != "ndarray"
                    or arguments[1] != (0,) or arguments[2] != b"b"):
                raise _Refused("an array started from other arguments than NumPy's")
            self._arrays_started += 1
            return _ArrayStub(outer=self._arrays_started == 1)
        if kind == "encode":
            # Protocol 2's bytes: (text, "latin1").
            if len(arguments) != 2 or not isinstance(arguments[0], str) or arguments[1] not in ("latin1", "latin-1"):
                raise _Refused("bytes encoded otherwise than NumPy's protocol 2")
            self._build_bytes(len(arguments[0]))
            try:
                encoded = arguments[0].encode("latin-1")
            except UnicodeEncodeError:
                raise _Refused("protocol 2 bytes holding characters beyond latin-1") from None
            self._forget(arguments[0], arguments)
            return encoded
        if kind == "frombuffer":
            # Protocol 5: (buffer, dtype, shape, order).
            if len(arguments) != 4 or arguments[3] not in ("C", "F"):
                raise _Refused("an array made by _frombuffer from other arguments than NumPy's")
            buffer, dtype, shape, order = arguments
            array = self._array(shape, dtype, buffer, order == "F")
            self._forget(buffer, arguments)
            return array
        raise _Refused(f"a call of {_describe_pickled_value(function)}")

    def _build(self, target: object, state: object) -> object:
        if isinstance(target, _Dtype) and target.dtype is None and not target.is_object:
            return self._build_dtype(target, state)
        if isinstance(target, _ArrayStub) and not target.built:
            if not isinstance(state, _Tuple) or len(state) != 5 or state[0] != 1 or not isinstance(state[3], bool):
                raise _Refused("an array state other than NumPy's (1, shape, dtype, fortran order, data)")
            _, shape, dtype, fortran_order, data = state
            if isinstance(dtype, _Dtype) and dtype.is_object:
                if not target.outer:
                    raise _Refused("an object array inside the dict; label files hold plain arrays")
                value = self._object_array(shape, data)
            else:
                value = self._array(shape, dtype, data, fortran_order)
                self._forget(data, state)
            target.value, target.built = value, True
            return value
        raise _Refused(f"BUILD of {_describe_pickled_value(target)}")

    def _build_dtype(self, target: _Dtype, state: object) -> _Dtype:
        descr = target.descr
        if not isinstance(state, _Tuple) or len(state) != 8 or state[0] != 3 or not isinstance(state[1], str):
            raise _Refused(f"a dtype {descr[:20]!r} with a state other than NumPy's")
        byte_order = state[1]
        text = _TEXT_DESCR.fullmatch(descr)
        if text is not None and byte_order in ("<", ">", "|"):
            raise _NotAMask(f"has dtype {byte_order}{descr}; expected a uint8 one-hot mask made by "
                            "utils/generate_gt_segmentation.py")
        if descr in _OBJECT_DESCR and tuple(state[1:]) == ("|", *_PLAIN_STATE[:-1], _OBJECT_FLAGS):
            target.is_object = True
            return target
        if _PLAIN_DESCR.fullmatch(descr) is None:
            raise _Refused(f"an array of dtype {descr[:20]!r}; label files hold plain numeric or boolean masks")
        if tuple(state[2:]) != _PLAIN_STATE:
            # Flags, fields, names or sizes taken from the file could make NumPy read memory as objects.
            raise _Refused(f"a dtype {descr!r} whose state is not a plain dtype's")
        if byte_order not in (("|",) if descr[-1] == "1" else ("<", ">")):
            raise _Refused(f"a dtype {descr!r} with byte order {byte_order[:4]!r}")
        target.dtype = np.dtype(byte_order + descr)
        return target

    def _array(self, shape: object, dtype: object, data: object, fortran_order: bool) -> object:
        if not isinstance(dtype, _Dtype) or dtype.dtype is None:
            raise _Refused(f"an array whose dtype is {_describe_pickled_value(dtype)}")
        if not _is_shape(shape):
            raise _Refused("an array shape that is not a tuple of sizes")
        if not isinstance(data, bytes | bytearray):
            raise _Refused(f"array data that is {_describe_pickled_value(data)}, not bytes")
        expected = math.prod(shape) * dtype.dtype.itemsize
        if len(data) != expected:
            # The data comes from the file, so no array can be larger than the file.
            raise _Refused(f"an array of shape {tuple(shape)} and dtype {dtype.dtype} ({expected} bytes) "
                           f"with {len(data)} bytes of data")
        self._build_bytes(expected)
        try:
            array = np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order="F" if fortran_order else "C")
        except ValueError:
            raise _Refused(f"an array of shape {tuple(shape)}, which NumPy cannot make") from None
        return self._on_array(array)

    def _object_array(self, shape: object, items: object) -> _ObjectArray:
        if not _is_shape(shape):
            raise _Refused("an array shape that is not a tuple of sizes")
        if not isinstance(items, list) or len(items) != math.prod(shape):
            raise _Refused("an object array whose elements do not match its shape")
        return _ObjectArray(tuple(shape), items)


def _is_shape(shape: object) -> bool:
    """Whether a value from the stream is an array shape: a short tuple of sizes below 2**63."""
    return (isinstance(shape, tuple) and len(shape) <= MAX_DIMENSIONS
            and all(type(size) is int and 0 <= size < 2**63 for size in shape))


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_pickled_dict(path: str, on_array: Callable[[np.ndarray], object]) -> object:
    """The element of the 0-d object array a `.npy` file pickles (the book's dict), without unpickling.

    Args:
        path: str. The `.npy` file.
        on_array: callable. Gets each array the file holds, in the file's order, read-only over bytes
            read from the file, and returns what stands for it in the result.

    Returns:
        The dict (or whatever plain value the object array held), each array replaced by `on_array`'s
        result.

    Raises:
        DatasetError: in one line naming the file, if it is not a `.npy` file, not a pickled 0-d object
            array, or its pickle holds anything but NumPy's pickle of a dict of plain arrays.
        OSError: if the file cannot be read.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        reader = _BoundedReader(file, size)
        try:
            read_header = _HEADER_READERS.get(np.lib.format.read_magic(reader))
            if read_header is None:
                raise ValueError("a .npy format version other than 1.0 and 2.0")
            shape, _, dtype = read_header(reader)
        except Exception as error:  # NumPy's header parser raises ValueError, tokenize's TokenError and more
            message = " ".join(str(error).split())[:200]
            raise DatasetError(f"{path}: cannot read it as a .npy file ({message}). "
                               "Regenerate it with utils/generate_gt_segmentation.py.") from None
        if dtype != np.dtype(object) or shape != ():
            raise DatasetError(
                f"{path}: expected np.save of a dict {{image filename: one-hot mask}}, found an array of shape "
                f"{shape} and dtype {dtype}. Regenerate it with utils/generate_gt_segmentation.py."
            )
        walker = _Walker(on_array, MATERIALISED_PER_FILE_BYTE * size + MATERIALISED_SLACK)
        opcodes = pickletools.genops(reader)
        position = reader.tell()
        try:
            while True:
                try:
                    opcode, argument, position = next(opcodes)
                except StopIteration:
                    break
                except ValueError as error:
                    # genops' words for a cut or undecodable stream (an unknown opcode, a length past the end).
                    message = " ".join(str(error).split())[:200]
                    raise DatasetError(
                        f"{path}: the pickle is truncated or damaged after byte {position} ({message}). "
                        "Regenerate it with utils/generate_gt_segmentation.py."
                    ) from None
                walker.step(opcode.name, argument)
            return walker.result()
        except _ForeignGlobal as refused:
            raise DatasetError(
                f"{path}: the pickle names the global {refused.qualified_name}; refused: label files may "
                "hold only arrays. Regenerate it with utils/generate_gt_segmentation.py, and read only "
                "label files you trust."
            ) from None
        except _Refused as refused:
            raise DatasetError(
                f"{path}: refused at byte {position}: the pickle holds {refused}. Label files hold only "
                "NumPy's pickle of a dict of plain arrays; regenerate it with utils/generate_gt_segmentation.py, "
                "and read only label files you trust."
            ) from None
        except _NotAMask as refused:
            raise DatasetError(f"{path}: a mask (at byte {position}) {refused}. Regenerate the labels.") from None
