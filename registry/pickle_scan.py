"""Opcode-level scanner for pickle-format weights: finds the globals a pickle would import, without unpickling.

Unpickling runs code: a GLOBAL/STACK_GLOBAL opcode imports any callable (os.system, builtins.eval) and REDUCE calls
it. This module walks the opcodes (pickletools' opcode table; nothing is ever loaded), resolves every import the
pickle would perform, including STACK_GLOBAL whose module and name come from the stack or the memo, and classifies
each one:

- allowed: what tensor checkpoints need (torch rebuild helpers, storages, dtypes, collections.OrderedDict, numpy
  array reconstruction, plain builtins such as set or slice);
- dangerous: modules and callables that run commands, evaluate code, open files or sockets, or import more
  (os, posix, subprocess, builtins.eval/exec/getattr/__import__, sys, socket, shutil, runpy, ...);
- unknown: everything else. Unknown globals are blocking findings too. A weights file needs nothing outside the
  allowlist, and this matches torch.load(weights_only=True), PyTorch's default since 2.6, which refuses any global
  outside its own allowlist: a checkpoint we pass will load there, and one that needs arbitrary classes (a pickled
  training script object, a custom module) is code, not weights, and is quarantined for a person to look at.

Formats: plain pickles (.pkl), legacy torch files (several pickles back to back, then raw storage bytes), and
zip-wrapped torch files (torch >= 1.6: every *.pkl member, e.g. archive/data.pkl, is scanned; TorchScript archives,
which carry code, are flagged). Memory stays flat: large byte/string arguments are skipped, never read whole, and
lines are read with a cap.
"""

from __future__ import annotations

import _compat_pickle
import lzma
import pickletools
import re
import struct
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

from registry.findings import Finding

# What a broken or unreadable zip raises (bad CRC or headers, corrupt deflate/bz2/lzma data, an unsupported or
# encrypted member): the file cannot be checked, which is a finding, never a crash that retries forever.
_UNREADABLE_ZIP = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError, OSError,
                   EOFError, ValueError, struct.error)
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
ZIP_MAGIC = b"PK\x03\x04"
MAX_LINE_BYTES = 64 * 1024  # GLOBAL/INT/STRING arguments end at a newline; real ones are short
MAX_KEPT_STRING_BYTES = 1024  # strings longer than this cannot be a module or attribute name: skipped, not kept
SKIP_CHUNK_BYTES = 1024 * 1024
MAX_PICKLES_PER_STREAM = 16  # legacy torch files hold 5 pickles before the raw storages
# Bounds on the simulation, so a hostile file cannot make the scanner itself use unbounded memory. Real
# checkpoints stay far below them (pickle batches list/dict items by 1000; a state dict memoizes a few objects per
# tensor); a pickle beyond them is reported as too complex to check, which blocks it.
MAX_STACK_ENTRIES = 1_000_000
MAX_MEMO_ENTRIES = 500_000
MAX_FINDINGS_PER_FILE = 50
# Bounds on work, so a small hostile file (a 97 KB zip inflating to a 100 MB pickle of tiny opcodes) cannot pin a
# worker: a torch state dict takes a few dozen opcodes per tensor and its data.pkl is a few MB, so these are far
# above any checkpoint. A file beyond one is reported as too complex to check, which blocks it (never retried).
MAX_OPCODES_PER_FILE = 10_000_000
MAX_PICKLE_MEMBER_BYTES = 256 * 1024 * 1024  # decompressed bytes read from one zip member
MAX_SCAN_SECONDS = 60.0  # per file

# Exact globals a weights checkpoint may import (module.qualname after Python 2 name mapping).
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.Tensor",
        "torch.Size",
        "torch.device",
        "torch.serialization._get_layout",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        "torch.UntypedStorage",
        "torch.strided",
        "torch.sparse_coo",
        "torch.per_tensor_affine",
        "torch.per_channel_affine",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",  # protocol 5 arrays (out-of-band buffers)
        "numpy._core.numeric._frombuffer",
        "_codecs.encode",  # how protocol-2 pickles spell a bytes literal
        "copyreg._reconstructor",  # rebuilds an object of a class that is itself a (checked) global
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.range",
        "builtins.complex",
        "builtins.bytearray",
        "builtins.bytes",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.str",
        "builtins.object",
    }
)
_TORCH_DTYPES = (
    "float32 float float64 double float16 half bfloat16 complex32 complex64 complex128 cfloat cdouble uint8 uint16 "
    "uint32 uint64 int8 int16 short int32 int int64 long bool qint8 quint8 qint32 quint4x2 quint2x4 float8_e4m3fn "
    "float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu float4_e2m1fn_x2"
).split()
_TORCH_STORAGES = (
    "Float Double Half BFloat16 Long Int Short Char Byte Bool ComplexFloat ComplexDouble QInt8 QUInt8 QInt32 "
    "QUInt4x2 QUInt2x4"
).split()
ALLOWED_GLOBALS = ALLOWED_GLOBALS | {f"torch.{name}" for name in _TORCH_DTYPES} | {
    f"torch.{name}Storage" for name in _TORCH_STORAGES
}
# numpy 2 pickles dtypes as numpy.dtypes.<Name>DType classes
_ALLOWED_PREFIXES = ("numpy.dtypes.",)

# Whole modules (and their submodules) whose every callable is dangerous.
DANGEROUS_MODULES: frozenset[str] = frozenset(
    {
        "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "runpy", "importlib", "pty", "pickle", "_pickle",
        "marshal", "ctypes", "code", "codeop", "pdb", "bdb", "webbrowser", "http", "httplib", "urllib", "urllib2",
        "requests", "aiohttp", "asyncio", "multiprocessing", "ssl", "ftplib", "smtplib", "telnetlib", "commands",
        "platform", "tempfile", "glob", "signal", "cProfile", "profile", "timeit", "trace", "pydoc", "pip",
        "setuptools", "distutils", "ensurepip", "venv", "uuid", "imaplib", "nturl2path", "dill", "cloudpickle",
        "joblib", "_io", "io", "fileinput", "zipimport", "pkgutil", "site", "sysconfig", "_posixsubprocess",
        "numpy.f2py", "numpy.testing", "numpy.distutils", "torch.hub", "torch.utils.cpp_extension", "torch.jit",
        "torch._inductor", "torch._dynamo", "torch.utils.collect_env", "torch.utils.bottleneck",
    }
)
# Single callables that are dangerous although their module is not.
DANGEROUS_GLOBALS: frozenset[str] = frozenset(
    {
        "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.getattr",
        "builtins.setattr", "builtins.delattr", "builtins.open", "builtins.input", "builtins.breakpoint",
        "builtins.globals", "builtins.locals", "builtins.vars", "builtins.apply", "builtins.execfile",
        "builtins.memoryview", "builtins.help", "builtins.exit", "builtins.quit",
        "operator.attrgetter", "operator.itemgetter", "operator.methodcaller", "_operator.attrgetter",
        "_operator.itemgetter", "_operator.methodcaller", "functools.partial", "functools.reduce",
        "types.CodeType", "types.FunctionType", "types.LambdaType", "types.MethodType", "types.ModuleType",
        "logging.FileHandler", "torch.load", "torch.serialization.load", "torch.storage._load_from_bytes",
        "numpy.load", "numpy.fromfile", "numpy.save", "numpy.ctypeslib.load_library",
        "pandas.read_pickle", "pandas.io.pickle.read_pickle", "copyreg.add_extension",
    }
)

GlobalVerdict = Literal["allowed", "dangerous", "unknown"]


def classify_global(module: str, name: str) -> GlobalVerdict:
    """Classify `module.name` (an import a pickle performs)."""
    full = f"{module}.{name}"
    if full in DANGEROUS_GLOBALS or any(module == m or module.startswith(m + ".") for m in DANGEROUS_MODULES):
        return "dangerous"
    # a dotted name reaches attributes of the object: builtins.getattr.__call__ is as dangerous as getattr
    if any(full.startswith(dangerous + ".") for dangerous in DANGEROUS_GLOBALS):
        return "dangerous"
    if full in ALLOWED_GLOBALS or full.startswith(_ALLOWED_PREFIXES):
        return "allowed"
    return "unknown"


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 names (`__builtin__`, `copy_reg`) the way the unpickler does for old protocols."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class PickleScanReport(BaseModel):
    """What a pickle-format file would import if loaded, and the findings that block it."""

    file: str
    format: Literal["pickle", "torch_zip"]
    pickles_scanned: int = Field(description="pickle streams walked (several per legacy torch file or zip)")
    globals: list[str] = Field(description="every distinct import, as module.name, sorted")
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(finding.blocking for finding in self.findings)


def is_pickle_candidate(name: str) -> bool:
    """Files whose name says they may be pickle-format weights (by suffix)."""
    return Path(name).suffix.lower() in PICKLE_SUFFIXES


def scan_pickle_path(path: Path | str, name: str | None = None) -> PickleScanReport:
    with open(path, "rb") as handle:
        return scan_pickle_file(handle, name or Path(path).name)


def scan_pickle_file(handle: BinaryIO, name: str) -> PickleScanReport:
    """Scan a seekable binary file: a zip-wrapped torch checkpoint, or one or more pickles back to back."""
    start = handle.tell()
    magic = handle.read(4)
    handle.seek(start)
    if magic == ZIP_MAGIC:
        return _scan_zip(handle, name)
    walk = _scan_pickle_stream(handle, name, member=None, budget=_Budget())
    return PickleScanReport(file=name, format="pickle", pickles_scanned=walk.pickles,
                            globals=sorted(walk.globals), findings=walk.findings)


# ------------------------------------------------------------------------------------------------------ zip files
def _scan_zip(handle: BinaryIO, name: str) -> PickleScanReport:
    try:
        archive = zipfile.ZipFile(handle)
    except _UNREADABLE_ZIP as exc:
        finding = Finding(check="pickle", code="malformed_zip", file=name,
                          message=f"starts like a zip archive but cannot be read as one: {exc}")
        return PickleScanReport(file=name, format="torch_zip", pickles_scanned=0, globals=[], findings=[finding])
    findings: list[Finding] = []
    found_globals: set[str] = set()
    pickles = 0
    with archive:
        members = archive.infolist()
        if any(_is_torchscript_code(info.filename) for info in members):
            findings.append(Finding(
                check="pickle", code="torchscript_code", file=name,
                message="TorchScript archive: it carries code (code/ members) that torch.jit.load runs; "
                        "upload plain weights (safetensors or a state_dict) instead",
            ))
        pickle_members = [info for info in members if info.filename.endswith(".pkl") and not info.is_dir()]
        if not pickle_members:
            findings.append(Finding(check="pickle", code="no_pickle_member", file=name,
                                    message="zip archive without a data.pkl: not a torch checkpoint"))
        budget = _Budget()
        for info in pickle_members:
            try:
                with archive.open(info) as member:
                    walk = _scan_pickle_stream(_InflateCap(member, MAX_PICKLE_MEMBER_BYTES), name,
                                               member=info.filename, budget=budget)
            except _UNREADABLE_ZIP as exc:
                findings.append(Finding(check="pickle", code="malformed_zip", file=name, subject=info.filename,
                                        message=f"member {info.filename} cannot be read: {exc}; it cannot be checked"))
                continue
            pickles += walk.pickles
            found_globals |= walk.globals
            findings += walk.findings
    if len(findings) > MAX_FINDINGS_PER_FILE:  # each member's walk is bounded; an archive of many members is too
        left_out = len(findings) - MAX_FINDINGS_PER_FILE
        findings = findings[:MAX_FINDINGS_PER_FILE] + [Finding(
            check="pickle", code="more_findings", file=name, message=f"{left_out} more findings not listed")]
    return PickleScanReport(file=name, format="torch_zip", pickles_scanned=pickles, globals=sorted(found_globals),
                            findings=findings)


def _is_torchscript_code(member: str) -> bool:
    parts = member.split("/")
    return "code" in parts[:-1] and member.endswith((".py", ".pkl", ".debug_pkl")) and len(parts) > 2


# ----------------------------------------------------------------------------------------------- opcode walking
class _Mark:
    """The MARK sentinel on the simulated stack."""


class _Unknown:
    """A stack value whose content we do not track (numbers, containers, call results)."""


MARK, UNKNOWN = _Mark(), _Unknown()
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "STRING", "BINSTRING", "SHORT_BINSTRING"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_LENGTH_PREFIX = {  # argument descriptor n -> (struct format of the length prefix, its size)
    pickletools.TAKEN_FROM_ARGUMENT1: ("<B", 1),
    pickletools.TAKEN_FROM_ARGUMENT4: ("<i", 4),
    pickletools.TAKEN_FROM_ARGUMENT4U: ("<I", 4),
    pickletools.TAKEN_FROM_ARGUMENT8U: ("<Q", 8),
}


class _Malformed(Exception):
    pass


class _TooComplex(Exception):
    pass


class _Budget:
    """Opcodes and seconds one file may take, shared by every pickle in it (all members of a zip)."""

    def __init__(self) -> None:
        self.opcodes_left = MAX_OPCODES_PER_FILE
        self.deadline = time.monotonic() + MAX_SCAN_SECONDS

    def spend(self, opcodes: int) -> None:
        self.opcodes_left -= opcodes
        if self.opcodes_left < 0:
            raise _TooComplex(f"more than {MAX_OPCODES_PER_FILE:,} opcodes")
        if time.monotonic() > self.deadline:
            raise _TooComplex(f"scanning took longer than {MAX_SCAN_SECONDS:g} s")


class _InflateCap:
    """A zip member's stream that refuses to inflate past `limit` bytes (a compression bomb stops here)."""

    def __init__(self, handle: BinaryIO, limit: int):
        self.handle, self.left, self.limit = handle, limit, limit

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise _TooComplex(f"the member inflates to more than {self.limit // 1024:,} KiB")
        return data

    def read(self, size: int = -1) -> bytes:
        return self._take(self.handle.read(size))

    def readline(self, size: int = -1) -> bytes:
        return self._take(self.handle.readline(size))

    def tell(self) -> int:
        return self.handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)


class _CappedReader:
    """Gives pickletools' argument readers a file whose readline() cannot grow without bound."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle

    def read(self, size: int) -> bytes:
        return self.handle.read(size)

    def readline(self) -> bytes:
        line = self.handle.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise _Malformed(f"argument line longer than {MAX_LINE_BYTES} bytes")
        return line


_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class _Walk:
    """Result of walking one stream: how many pickles, which globals, what findings."""

    def __init__(self) -> None:
        self.pickles = 0
        self.globals: set[str] = set()
        self.findings: list[Finding] = []
        self._reported: set[tuple[str, str]] = set()
        self.findings_left_out = 0

    def add_global(self, module: str, name: str, file: str, member: str | None, offset: int) -> None:
        if not (_DOTTED_NAME.fullmatch(module) and _DOTTED_NAME.fullmatch(name)):
            # no import can succeed with such a name; in the first pickle that means a broken file, later it is
            # raw data that happened to parse for a few bytes
            if self.pickles == 0:
                self.add(file, "malformed_global", f"import of an invalid name {module!r} {name!r} at byte {offset}")
            return
        module, name = _python3_name(module, name)
        full = f"{module}.{name}"
        self.globals.add(full)
        verdict = classify_global(module, name)
        if verdict == "allowed" or (full, member or "") in self._reported:
            return
        self._reported.add((full, member or ""))
        where = f"{member} at byte {offset}" if member else f"byte {offset}"
        if verdict == "dangerous":
            message = f"imports {full} ({where}): loading this file would run it"
        else:
            message = f"imports {full} ({where}), which is not on the weights allowlist"
        self.add(file, f"{verdict}_global", message, subject=full)

    def add(self, file: str, code: str, message: str, subject: str | None = None) -> None:
        if len(self.findings) >= MAX_FINDINGS_PER_FILE:
            self.findings_left_out += 1
            return
        self.findings.append(Finding(check="pickle", code=code, file=file, subject=subject, message=message))


def _scan_pickle_stream(handle: BinaryIO, file: str, member: str | None, budget: _Budget) -> _Walk:
    """Walk consecutive pickles until the end of the stream or the first bytes that are not a pickle.

    The first pickle must parse completely. Later ones are optional: a legacy torch file continues with raw
    storage bytes after its five pickles, and torch.load never unpickles those. A later pickle must start with
    PROTO (torch writes protocol 2); if it then fails to parse, only imports with real Python names are kept from
    it, since the unpickler would have run them before failing, while random storage bytes never spell one.
    """
    walk = _Walk()
    reader = _CappedReader(handle)
    label = f"{member} in {file}" if member else file
    while walk.pickles < MAX_PICKLES_PER_STREAM:
        try:
            first_byte = handle.read(1)
            if not first_byte:
                if walk.pickles == 0:
                    walk.add(file, "empty_pickle", f"{label} is empty")
                break
            if walk.pickles > 0:
                if first_byte != b"\x80" or handle.read(1)[:1] not in _PROTOCOL_BYTES:
                    break  # raw data after the last pickle (legacy torch storages)
                handle.seek(-1, 1)
            _walk_one_pickle(first_byte, handle, reader, walk, file, member, budget)
        except _TooComplex as exc:
            walk.add(file, "pickle_too_complex", f"{label}: {exc}; it cannot be checked")
            break
        except (_Malformed, ValueError, struct.error, EOFError, UnicodeDecodeError) as exc:
            if walk.pickles == 0:
                walk.add(file, "malformed_pickle", f"{label} is not a valid pickle: {exc}")
            break  # a later "pickle" that does not parse is data, which torch.load does not unpickle either
        walk.pickles += 1
    if walk.findings_left_out:
        walk.findings.append(Finding(check="pickle", code="more_findings", file=file,
                                     message=f"{walk.findings_left_out} more findings not listed"))
    return walk


_PROTOCOL_BYTES = {bytes([version]) for version in range(6)}


def _walk_one_pickle(first_byte: bytes, handle: BinaryIO, reader: _CappedReader, walk: _Walk, file: str,
                     member: str | None, budget: _Budget) -> None:
    """Simulate the unpickler's stack just enough to know every STACK_GLOBAL's operands; nothing is built."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    code = first_byte
    opcodes = 0
    while True:
        opcodes += 1
        if opcodes == 10_000:  # the budget is checked in batches: one clock read per 10,000 opcodes
            budget.spend(opcodes)
            opcodes = 0
        position = _position(handle)
        op = pickletools.code2op.get(code.decode("latin-1"))
        if op is None:
            raise _Malformed(f"unknown opcode {code!r} at byte {position}")
        value = _read_argument(op, handle, reader)
        name = op.name
        if name == "STOP":
            return
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(value).partition(" ")
            walk.add_global(module, attr, file, member, position)
            _apply_stack_effect(op, stack)
        elif name == "STACK_GLOBAL":
            attr, module = _pop(stack), _pop(stack)
            if isinstance(module, str) and isinstance(attr, str):
                walk.add_global(module, attr, file, member, position)
            else:
                walk.add(file, "unresolved_global",
                         f"STACK_GLOBAL at byte {position} imports a name computed at load time; it cannot be "
                         "checked without running the pickle")
            stack.append(UNKNOWN)
        elif name.startswith("EXT"):
            walk.add(file, "extension_global",
                     f"{name} at byte {position} imports through the copyreg extension registry; not allowed",
                     subject=f"extension code {value}")
            stack.append(UNKNOWN)
        elif name in _PUT_OPS:
            memo[int(value)] = stack[-1] if stack else UNKNOWN
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else UNKNOWN
        elif name in _GET_OPS:
            stack.append(memo.get(int(value), UNKNOWN))
        elif name == "DUP":
            stack.append(stack[-1] if stack else UNKNOWN)
        elif name == "MARK":
            stack.append(MARK)
        elif name == "POP":
            _pop(stack)
        elif name in _STRING_OPS:
            stack.append(value if isinstance(value, str) else UNKNOWN)
        else:
            _apply_stack_effect(op, stack)
        if len(stack) > MAX_STACK_ENTRIES or len(memo) > MAX_MEMO_ENTRIES:
            raise _TooComplex(f"more than {MAX_STACK_ENTRIES:,} stack or {MAX_MEMO_ENTRIES:,} memo entries")
        code = handle.read(1)
        if not code:
            raise EOFError("pickle ends without a STOP opcode")


def _position(handle: BinaryIO) -> int:
    """Offset of the opcode just read (for messages); -1 when the stream cannot tell."""
    try:
        return handle.tell() - 1
    except (OSError, AttributeError):
        return -1


def _pop(stack: list[object]) -> object:
    return stack.pop() if stack else UNKNOWN


def _apply_stack_effect(op: pickletools.OpcodeInfo, stack: list[object]) -> None:
    before = op.stack_before
    if pickletools.markobject in before:
        while stack and stack[-1] is not MARK:  # the slice above the mark
            stack.pop()
        if stack:
            stack.pop()  # the mark itself
        for _ in range(before.index(pickletools.markobject)):
            _pop(stack)
    else:
        for _ in before:
            _pop(stack)
    stack.extend(UNKNOWN for _ in op.stack_after)


def _read_argument(op: pickletools.OpcodeInfo, handle: BinaryIO, reader: _CappedReader) -> object:
    """Read (or skip) an opcode's argument. Long byte/string arguments are skipped so memory stays flat."""
    arg = op.arg
    if arg is None:
        return None
    if arg.n in _LENGTH_PREFIX:
        fmt, size = _LENGTH_PREFIX[arg.n]
        raw = handle.read(size)
        if len(raw) != size:
            raise EOFError(f"{op.name}: truncated length")
        length = struct.unpack(fmt, raw)[0]
        if length < 0:
            raise _Malformed(f"{op.name}: negative length")
        if length > MAX_KEPT_STRING_BYTES:
            _skip(handle, length)
            return UNKNOWN
        data = handle.read(length)
        if len(data) != length:
            raise EOFError(f"{op.name}: truncated argument")
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"):
            return data.decode("utf-8", "surrogatepass")
        if op.name in ("BINSTRING", "SHORT_BINSTRING"):
            return data.decode("latin-1")  # the unpickler's default encoding turns these into str
        return UNKNOWN
    value = arg.reader(reader)  # fixed-size or newline-terminated: small by construction (lines are capped)
    if op.name == "STRING" and isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def _skip(handle: BinaryIO, length: int) -> None:
    remaining = length
    while remaining > 0:
        data = handle.read(min(remaining, SKIP_CHUNK_BYTES))
        if not data:
            raise EOFError("argument runs past the end of the file")
        remaining -= len(data)
