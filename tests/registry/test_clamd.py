"""The clamd client against a real clamd: verdicts, the window policy for large files, and clamd being down."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devstack.clamd import clamd_process
from core.processes import free_port
from registry.clamd import DEFAULT_STREAM_MAX_BYTES, ClamdClient, ClamdUnavailable
from tests.model_files import eicar_bytes, write_eicar_file

from .conftest import TEST_MAX_SCAN_BYTES, TEST_OVERLAP_BYTES, TEST_STREAM_MAX_BYTES, client_for

MiB = 1024 * 1024


def random_bytes(size: int, seed: int = 1) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


async def test_ping_and_version(clamd_client: ClamdClient):
    assert await clamd_client.ping() is True
    assert (await clamd_client.version()).startswith("ClamAV ")


async def test_eicar_file_is_infected_with_its_signature_name(clamd_client: ClamdClient, workdir: Path):
    path = write_eicar_file(workdir / "eicar.bin")
    verdict = await clamd_client.scan_file(path)
    assert verdict.status == "infected"
    assert verdict.signature is not None and verdict.signature.startswith("Eicar-Test")
    assert verdict.windows == 1


async def test_eicar_inside_a_weights_file_is_found(clamd_client: ClamdClient, tiny_model, workdir: Path):
    poisoned = workdir / "model.safetensors"
    weights = (tiny_model.path / "model.safetensors").read_bytes()
    poisoned.write_bytes(weights[: len(weights) // 2] + eicar_bytes() + weights[len(weights) // 2 :])
    verdict = await clamd_client.scan_file(poisoned)
    assert verdict.infected and verdict.signature.startswith("Eicar-Test-Signature")


async def test_clean_model_files_are_clean(clamd_client: ClamdClient, tiny_model):
    for name in tiny_model.files:
        verdict = await clamd_client.scan_file(tiny_model.path / name)
        assert verdict.status == "clean", (name, verdict)
        assert verdict.scanned_bytes == (tiny_model.path / name).stat().st_size


async def test_empty_stream_is_clean(clamd_client: ClamdClient):
    verdict = await clamd_client.instream([])
    assert verdict.clean and verdict.scanned_bytes == 0


async def test_file_larger_than_the_stream_limit_is_scanned_in_windows(clamd_client: ClamdClient):
    data = random_bytes(5 * TEST_STREAM_MAX_BYTES + 12345)
    verdict = await clamd_client.scan_bytes(data)
    stride = TEST_STREAM_MAX_BYTES - TEST_OVERLAP_BYTES
    assert verdict.clean
    assert verdict.scanned_bytes == len(data)
    assert verdict.windows == -(-(len(data) - TEST_OVERLAP_BYTES) // stride)


@pytest.mark.parametrize("where", ["start", "straddling_window_end", "inside_overlap", "last_byte"])
async def test_eicar_is_found_anywhere_in_a_large_file(clamd_client: ClamdClient, where: str):
    eicar = eicar_bytes()
    size = 3 * TEST_STREAM_MAX_BYTES
    offset = {
        "start": 0,
        "straddling_window_end": TEST_STREAM_MAX_BYTES - len(eicar) // 2,  # cut in two by window 0's end
        "inside_overlap": TEST_STREAM_MAX_BYTES - TEST_OVERLAP_BYTES // 2,
        "last_byte": size - len(eicar),
    }[where]
    data = bytearray(random_bytes(size, seed=7))
    data[offset : offset + len(eicar)] = eicar
    chunks = [bytes(data[i : i + 300_001]) for i in range(0, len(data), 300_001)]  # odd chunk sizes on purpose
    verdict = await clamd_client.instream(chunks)
    assert verdict.infected, verdict
    assert verdict.signature.startswith("Eicar-Test-Signature")
    assert verdict.window_start is not None
    assert verdict.window_start <= offset and offset + len(eicar) <= verdict.window_start + TEST_STREAM_MAX_BYTES


async def test_infection_stops_reading_early(clamd_client: ClamdClient):
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        yield eicar_bytes()
        consumed += len(eicar_bytes())
        for _ in range(40):  # 40 MiB that need not be read once the first window is infected
            yield bytes(MiB)
            consumed += MiB

    verdict = await clamd_client.instream(stream())
    assert verdict.infected
    assert consumed < 20 * MiB


async def test_clamd_enforces_its_limit_and_an_oversized_stream_is_an_error_not_clean(clamd_server):
    # a client told a larger limit than clamd's sends one too-long stream: clamd refuses it
    misconfigured = client_for(clamd_server, stream_max_bytes=4 * TEST_STREAM_MAX_BYTES)
    verdict = await misconfigured.scan_bytes(random_bytes(3 * TEST_STREAM_MAX_BYTES))
    assert verdict.status == "error"
    assert "size limit exceeded" in verdict.detail and "StreamMaxLength" in verdict.detail


def deflated_zip(member_size: int) -> bytes:
    """A small zip whose one compressed member unpacks to member_size zero bytes followed by EICAR."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.bin", bytes(member_size) + eicar_bytes())
    return buffer.getvalue()


async def test_compressed_archive_members_are_scanned_whole_or_flagged(clamd_client: ClamdClient):
    small = await clamd_client.scan_bytes(deflated_zip(TEST_MAX_SCAN_BYTES // 4))
    assert small.infected and small.signature.startswith("Eicar-Test-Signature")
    # a member too large to unpack within MaxScanSize is not called clean: clamd names the limit
    huge = await clamd_client.scan_bytes(deflated_zip(2 * TEST_MAX_SCAN_BYTES))
    assert huge.infected and huge.signature == "Heuristics.Limits.Exceeded.MaxScanSize"


async def test_compressed_member_deep_inside_a_large_zip_is_unpacked(clamd_client: ClamdClient):
    """clamd finds zip local headers inside later windows too, so a small compressed member is unpacked there."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("archive/data/0"), random_bytes(3 * TEST_STREAM_MAX_BYTES))  # stored
        archive.writestr(zipfile.ZipInfo("archive/notes.bin"), bytes(100_000) + eicar_bytes(),
                         compress_type=zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    assert eicar_bytes() not in data  # only visible once unpacked
    verdict = await clamd_client.scan_bytes(data)
    assert verdict.infected and verdict.windows >= 3 and verdict.window_start > 0


async def test_default_limits_of_the_dev_stack_agree(tmp_path: Path):
    """clamd as `make up` runs it and the client with its defaults: a file just over 64 MiB takes two windows."""
    process = clamd_process(tmp_path, free_port()).start().wait_healthy()
    try:
        client = ClamdClient("127.0.0.1", int(process.url.rsplit(":", 1)[1]))
        data = bytes(DEFAULT_STREAM_MAX_BYTES + MiB)
        verdict = await client.scan_bytes(data)
        assert verdict.clean and verdict.windows == 2
    finally:
        process.stop()


async def test_unreachable_clamd_raises_clamd_unavailable():
    client = ClamdClient("127.0.0.1", free_port(), connect_timeout_s=1.0)
    with pytest.raises(ClamdUnavailable):
        await client.ping()
    with pytest.raises(ClamdUnavailable):
        await client.scan_bytes(b"anything")


async def test_clamd_killed_mid_scan_raises_then_a_retry_succeeds(tmp_path: Path):
    port = free_port()
    process = clamd_process(tmp_path, port, stream_max_bytes=TEST_STREAM_MAX_BYTES).start().wait_healthy()
    client = ClamdClient("127.0.0.1", port, stream_max_bytes=TEST_STREAM_MAX_BYTES,
                         window_overlap_bytes=TEST_OVERLAP_BYTES, reply_timeout_s=10.0)
    data = random_bytes(4 * TEST_STREAM_MAX_BYTES, seed=3)

    async def stream_that_kills_clamd() -> AsyncIterator[bytes]:
        for index in range(0, len(data), 256 * 1024):
            if index == TEST_STREAM_MAX_BYTES:
                process.kill()
                await asyncio.sleep(0.05)
            yield data[index : index + 256 * 1024]

    try:
        with pytest.raises(ClamdUnavailable):
            await client.instream(stream_that_kills_clamd())
        process = clamd_process(tmp_path, port, stream_max_bytes=TEST_STREAM_MAX_BYTES).start().wait_healthy()
        verdict = await client.scan_bytes(data)  # what the activity's retry does
        assert verdict.clean and verdict.scanned_bytes == len(data)
    finally:
        process.stop()


async def test_concurrent_scans_share_one_client(clamd_client: ClamdClient, workdir: Path):
    clean = random_bytes(3 * MiB, seed=11)
    infected = write_eicar_file(workdir / "e.bin", padding_before=MiB)
    verdicts = await asyncio.gather(*(clamd_client.scan_bytes(clean) for _ in range(4)),
                                    clamd_client.scan_file(infected))
    assert [v.status for v in verdicts] == ["clean"] * 4 + ["infected"]
