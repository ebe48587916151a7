"""The opcode-level pickle scanner: hostile pickles are caught, checkpoints pass, nothing is ever executed."""

from __future__ import annotations

import pickle
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
from picklescan.scanner import scan_file_path

from registry.pickle_scan import is_pickle_candidate, scan_pickle_path
from tests.model_files import (
    PickleOps,
    malicious_pickle_bytes,
    write_legacy_torch_checkpoint,
    write_malicious_pickle,
    write_torch_zip_checkpoint,
)


def codes(report) -> list[str]:
    return [finding.code for finding in report.findings]


@pytest.mark.parametrize("style", ["global", "stack_global", "memo"])
def test_reduce_calling_os_system_is_dangerous(tmp_path: Path, style: str):
    marker = tmp_path / "pwned"
    path = write_malicious_pickle(tmp_path / f"{style}.pkl", command=f"touch {marker}", style=style)
    report = scan_pickle_path(path)
    assert not report.ok
    assert [(f.code, f.subject, f.file) for f in report.findings] == [("dangerous_global", "os.system", path.name)]
    assert not marker.exists()  # scanning never runs the payload
    # picklescan (an independent scanner) agrees on the file
    assert scan_file_path(str(path)).issues_count == 1


def test_python2_names_are_mapped_before_classifying(tmp_path: Path):
    path = tmp_path / "eval.pkl"
    path.write_bytes(PickleOps(0).global_("__builtin__", "eval").string("1+1").tuple1().reduce().stop())
    report = scan_pickle_path(path)
    assert report.globals == ["builtins.eval"]
    assert codes(report) == ["dangerous_global"]


@pytest.mark.parametrize("module,name", [("subprocess", "Popen"), ("posix", "system"), ("builtins", "getattr"),
                                         ("socket", "create_connection"), ("shutil", "rmtree"), ("runpy", "run_path"),
                                         ("sys", "modules"), ("os.path", "join"), ("builtins", "__import__")])
def test_dangerous_modules_and_callables(tmp_path: Path, module: str, name: str):
    path = tmp_path / "x.pkl"
    path.write_bytes(PickleOps(4).stack_global(module, name).empty_tuple().reduce().stop())
    assert codes(scan_pickle_path(path)) == ["dangerous_global"]


def test_unknown_globals_block_like_torch_weights_only(tmp_path: Path):
    path = tmp_path / "custom.pt"
    path.write_bytes(PickleOps(2).global_("__main__", "MyModel").empty_tuple().reduce().stop())
    report = scan_pickle_path(path)
    assert codes(report) == ["unknown_global"]
    assert report.findings[0].subject == "__main__.MyModel" and report.findings[0].blocking


def test_stack_global_with_a_computed_name_cannot_pass(tmp_path: Path):
    # the module name is the result of a call (str.lower on 'OS'), known only at load time
    ops = PickleOps(4).stack_global("builtins", "str").string("OS").tuple1().reduce()
    ops.string("system").raw(b"\x93").string("id").tuple1().reduce()
    path = tmp_path / "computed.pkl"
    path.write_bytes(ops.stop())
    assert "unresolved_global" in codes(scan_pickle_path(path))


def test_benign_pickles_of_every_protocol_pass(tmp_path: Path):
    value = {"weights": [1.5, 2, (3, 4)], "name": "layer", "raw": b"\x00" * 300, "ids": {1, 2},
             "frozen": frozenset({3}), "order": OrderedDict(a=1), "big": 2**80, "none": None, "flag": True,
             "array": bytearray(b"xy"), "nested": [[{"k": "v"}] * 3]}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))  # writing a pickle is safe; loading is not
        report = scan_pickle_path(path)
        assert report.ok, (protocol, report.findings)
        assert report.pickles_scanned == 1


def test_numpy_arrays_pickled_by_numpy_itself_pass(tmp_path: Path):
    import numpy as np

    value = {"weights": np.arange(12, dtype=np.float32).reshape(3, 4), "scale": np.float64(0.5),
             "ids": np.zeros(5, dtype=np.int64)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"arrays{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        report = scan_pickle_path(path)
        assert report.ok, (protocol, report.findings)
        assert any(name.startswith("numpy.") for name in report.globals)


def test_clean_zip_checkpoint_passes_and_lists_its_globals(tmp_path: Path):
    report = scan_pickle_path(write_torch_zip_checkpoint(tmp_path / "pytorch_model.bin"))
    assert report.ok and report.format == "torch_zip" and report.pickles_scanned == 1
    assert report.globals == ["collections.OrderedDict", "torch.FloatStorage", "torch._utils._rebuild_tensor_v2"]
    assert scan_file_path(str(tmp_path / "pytorch_model.bin")).issues_count == 0


def test_poisoned_zip_checkpoint_names_the_member(tmp_path: Path):
    report = scan_pickle_path(write_torch_zip_checkpoint(tmp_path / "model.pt", malicious_command="id"))
    assert codes(report) == ["dangerous_global"]
    assert "archive/data.pkl" in report.findings[0].message


def test_every_pkl_member_of_a_zip_is_scanned(tmp_path: Path):
    path = write_torch_zip_checkpoint(tmp_path / "model.pth")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("archive/extra/hidden.pkl", malicious_pickle_bytes())
    report = scan_pickle_path(path)
    assert report.pickles_scanned == 2
    assert codes(report) == ["dangerous_global"] and "extra/hidden.pkl" in report.findings[0].message


def test_torchscript_archives_are_flagged(tmp_path: Path):
    path = write_torch_zip_checkpoint(tmp_path / "scripted.pt")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("archive/code/__torch__/model.py", "def forward(self, x): return x\n")
    assert "torchscript_code" in codes(scan_pickle_path(path))


def test_legacy_checkpoint_scans_all_pickles_and_ignores_raw_storages(tmp_path: Path):
    clean = scan_pickle_path(write_legacy_torch_checkpoint(tmp_path / "old.bin"))
    assert clean.ok and clean.pickles_scanned == 5
    poisoned = scan_pickle_path(write_legacy_torch_checkpoint(tmp_path / "old-bad.bin", malicious_command="id"))
    assert codes(poisoned) == ["dangerous_global"]


def test_payload_before_a_parse_error_is_still_reported(tmp_path: Path):
    # the unpickler runs REDUCE before it reaches the garbage, so the import counts
    path = tmp_path / "broken.pkl"
    path.write_bytes(malicious_pickle_bytes()[:-1] + b"\xff\xfe garbage")
    assert set(codes(scan_pickle_path(path))) == {"dangerous_global", "malformed_pickle"}


@pytest.mark.parametrize("content", [b"", b"\x80\x02", b"not a pickle at all", b"PK\x03\x04broken zip"])
def test_malformed_files_are_findings_not_crashes(tmp_path: Path, content: bytes):
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    report = scan_pickle_path(path)
    assert not report.ok
    assert codes(report)[0] in {"empty_pickle", "malformed_pickle", "malformed_zip"}


def test_huge_inline_arguments_are_skipped_with_flat_memory(tmp_path: Path):
    path = tmp_path / "big.pkl"
    payload_size = 64 * 1024 * 1024
    with open(path, "wb") as handle:  # BINBYTES8 of 64 MiB, then os.system
        handle.write(b"\x80\x04\x8e" + struct.pack("<Q", payload_size))
        block = bytes(1024 * 1024)
        for _ in range(payload_size // len(block)):
            handle.write(block)
        handle.write(b"0" + malicious_pickle_bytes(style="stack_global")[2:])
    tracemalloc.start()
    try:
        report = scan_pickle_path(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes(report) == ["dangerous_global"]
    assert peak < 8 * 1024 * 1024


def test_pickle_candidates_by_suffix():
    assert [is_pickle_candidate(n) for n in ("pytorch_model.bin", "x.PT", "a.pth", "b.pkl", "c.ckpt",
                                             "model.safetensors", "config.json")] == [True] * 5 + [False] * 2


def test_memo_and_stack_bombs_are_too_complex_not_memory_hogs(tmp_path: Path, monkeypatch):
    import registry.pickle_scan as pickle_scan

    monkeypatch.setattr(pickle_scan, "MAX_MEMO_ENTRIES", 1000)
    monkeypatch.setattr(pickle_scan, "MAX_STACK_ENTRIES", 2000)
    memo_bomb = tmp_path / "memo.pkl"
    memo_bomb.write_bytes(b"\x80\x04N" + b"\x94" * 1500 + b".")  # MEMOIZE the same None 1500 times
    stack_bomb = tmp_path / "stack.pkl"
    stack_bomb.write_bytes(b"\x80\x04" + b"N" * 2500 + b".")
    for path in (memo_bomb, stack_bomb):
        assert codes(scan_pickle_path(path)) == ["pickle_too_complex"]


def _zip_with_member(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", member)
    return path


def _many_opcodes(count: int) -> bytes:
    """A valid pickle of `count` (MARK, POP_MARK) pairs: cheap to write, slow to walk, nothing to import."""
    return b"\x80\x02" + b"(1" * count + b"N."


def test_a_small_zip_inflating_to_a_huge_pickle_is_blocked_with_a_reason(tmp_path: Path, monkeypatch):
    import registry.pickle_scan as pickle_scan

    monkeypatch.setattr(pickle_scan, "MAX_PICKLE_MEMBER_BYTES", 256 * 1024)
    bomb = _zip_with_member(tmp_path / "bomb.pt", _many_opcodes(256 * 1024))  # 512 KB inflated
    assert bomb.stat().st_size < 10 * 1024  # deflate squeezes the repetition to a few KB
    report = scan_pickle_path(bomb)
    assert codes(report) == ["pickle_too_complex"]
    assert "inflates to more than 0 MiB" not in report.findings[0].message
    assert "inflates to more than 256 KiB" in report.findings[0].message


def test_opcode_and_time_bounds_block_instead_of_pinning_the_worker(tmp_path: Path, monkeypatch):
    import registry.pickle_scan as pickle_scan

    busy = tmp_path / "busy.pkl"
    busy.write_bytes(_many_opcodes(200_000))
    assert codes(scan_pickle_path(busy)) == []  # within the default bounds it is just a (harmless) pickle
    monkeypatch.setattr(pickle_scan, "MAX_OPCODES_PER_FILE", 100_000)
    report = scan_pickle_path(busy)
    assert codes(report) == ["pickle_too_complex"] and "more than 100,000 opcodes" in report.findings[0].message
    monkeypatch.setattr(pickle_scan, "MAX_OPCODES_PER_FILE", 10**9)
    monkeypatch.setattr(pickle_scan, "MAX_SCAN_SECONDS", 0.0)
    report = scan_pickle_path(busy)
    assert codes(report) == ["pickle_too_complex"] and "longer than 0 s" in report.findings[0].message


def test_a_100_mb_pickle_in_a_100_kb_zip_ends_at_the_time_bound(tmp_path: Path, monkeypatch):
    """The reported attack at its real size ends with a blocking finding once the per-file time is spent (the
    default is MAX_SCAN_SECONDS; a shorter one keeps this test quick)."""
    import registry.pickle_scan as pickle_scan

    monkeypatch.setattr(pickle_scan, "MAX_SCAN_SECONDS", 1.0)
    bomb = _zip_with_member(tmp_path / "bomb.pt", _many_opcodes(50 * 1024 * 1024))  # 100 MB inflated
    assert bomb.stat().st_size < 200 * 1024
    report = scan_pickle_path(bomb)
    assert codes(report) == ["pickle_too_complex"] and "longer than 1 s" in report.findings[0].message


def test_zip_members_that_cannot_be_read_are_findings_not_crashes(tmp_path: Path):
    """A wrong CRC, corrupt deflate data, an encrypted member: each ends as a blocking finding naming the member
    (an exception would fail the activity, which retries the same file forever)."""
    clean = _zip_with_member(tmp_path / "clean.pt", _many_opcodes(1000))
    raw = clean.read_bytes()
    header = raw.index(b"PK\x03\x04")
    name_length, extra_length = struct.unpack("<HH", raw[header + 26: header + 30])
    data_start = header + 30 + name_length + extra_length
    bad_crc = bytearray(raw)
    bad_crc[header + 14] ^= 0xFF  # the local header's CRC-32 (zipfile checks the central directory's)
    central = raw.index(b"PK\x01\x02")
    bad_crc[central + 16] ^= 0xFF
    corrupt = bytearray(raw)
    corrupt[data_start: data_start + 4] = b"\xff\xff\xff\xff"
    encrypted = bytearray(raw)
    encrypted[header + 6] |= 0x1  # general purpose flag bit 0: encrypted
    encrypted[central + 8] |= 0x1
    for label, content in (("crc", bad_crc), ("deflate", corrupt), ("encrypted", encrypted)):
        path = tmp_path / f"{label}.pt"
        path.write_bytes(bytes(content))
        report = scan_pickle_path(path)
        assert codes(report) == ["malformed_zip"], (label, report.findings)
        assert report.findings[0].subject == "archive/data.pkl" and not report.ok


def test_an_archive_of_many_poisoned_members_keeps_a_bounded_report(tmp_path: Path):
    import registry.pickle_scan as pickle_scan

    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(200):
            archive.writestr(f"archive/{index}/data.pkl", malicious_pickle_bytes(command="true"))
    report = scan_pickle_path(path)
    assert len(report.findings) == pickle_scan.MAX_FINDINGS_PER_FILE + 1
    assert report.findings[-1].code == "more_findings" and not report.ok
