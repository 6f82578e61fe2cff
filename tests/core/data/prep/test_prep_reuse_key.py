"""prep's reuse key reads content (issue 16, 1b): a same-size edit of admissions.csv.gz that flips deaths was
served from the old outputs ("reusing them") because the key was file names and sizes."""

import gzip
import io
import os

import pandas as pd

from mmfair.core.config import PrepConfig
from mmfair.core.data.prep import run_prep
from mmfair.core.data.store import SAMPLED_BLOCK_BYTES, SAMPLED_BLOCKS, inputs_fingerprint
from mmfair.core.workspace import Workspace


def gzip_padded(text: str, size: int) -> bytes:
    """``text`` gzipped to exactly ``size`` bytes, padded through the header's FNAME field."""
    bare = gzip.compress(text.encode(), mtime=0)
    pad = size - len(bare) - 1  # FNAME is its bytes plus a NUL
    assert pad >= 1, "size too small to pad to"
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="x" * pad, mode="wb", fileobj=buffer, mtime=0) as fh:
        fh.write(text.encode())
    assert len(buffer.getvalue()) == size
    return buffer.getvalue()


def flip_deaths(text: str, n: int) -> str:
    """Set ``hospital_expire_flag`` (the last field) to 1 on the first ``n`` rows where it is 0."""
    lines = text.splitlines()
    flipped = 0
    for i, line in enumerate(lines[1:], start=1):
        if line.endswith(",0") and flipped < n:
            lines[i] = line[:-1] + "1"
            flipped += 1
    assert flipped == n
    return "\n".join(lines) + "\n"


def test_same_size_same_mtime_edit_of_admissions_rebuilds(tree, tmp_path, caplog):
    path = tree[0] / "hosp" / "admissions.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode()
    size = len(gzip.compress(text.encode(), mtime=0)) + 64
    path.write_bytes(gzip_padded(text, size))
    ws = Workspace.resolve(tmp_path / "ws")
    config = PrepConfig(mimic_root=tree[0], cxr_root=tree[1], skip_encoder=True, workers=1)
    first = run_prep(config, ws)
    deaths = int(pd.read_csv(ws.cohort_csv)["mortality"].sum())
    stat = path.stat()

    path.write_bytes(gzip_padded(flip_deaths(text, 6), size))  # same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))      # ... and the old mtime restored
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    with caplog.at_level("INFO", logger="mmfair.core.data.prep"):
        again = run_prep(config, ws)
    assert not again.reused and again.fingerprint != first.fingerprint and "reusing" not in caplog.text
    assert int(pd.read_csv(ws.cohort_csv)["mortality"].sum()) > deaths


def write_events(path, size: int) -> bytes:
    data = bytes(range(256)) * (size // 256)
    path.write_bytes(data)
    return data


def test_event_tables_are_keyed_on_size_mtime_and_sampled_blocks(tmp_path):
    events = tmp_path / "icu" / "chartevents.csv.gz"
    events.parent.mkdir()
    size = 64 * SAMPLED_BLOCK_BYTES  # 4 MiB: the 16 sampled blocks cover a quarter of it
    data = write_events(events, size)
    stat = events.stat()
    base = inputs_fingerprint([events], {})

    def rewrite(offset: int) -> str:
        changed = bytearray(data)
        changed[offset] ^= 0xFF
        events.write_bytes(bytes(changed))
        os.utime(events, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return inputs_fingerprint([events], {})

    # the sampled blocks start at last * i // 15 with last = size - 64 KiB: block 0 at 0, block 15 at the end
    last = size - SAMPLED_BLOCK_BYTES
    assert rewrite(0) != base
    assert rewrite(size - 1) != base
    assert rewrite(last * 7 // (SAMPLED_BLOCKS - 1) + 5) != base  # inside block 7
    # the documented blind spot: a byte between two blocks, same size, old mtime restored
    gap = last * 1 // (SAMPLED_BLOCKS - 1) + SAMPLED_BLOCK_BYTES + 10
    assert gap < last * 2 // (SAMPLED_BLOCKS - 1)
    assert rewrite(gap) == base
    events.write_bytes(data)
    os.utime(events, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: rebuilt, never a stale reuse
    assert inputs_fingerprint([events], {}) != base


def test_small_tables_are_hashed_in_full(tmp_path):
    table = tmp_path / "hosp" / "patients.csv.gz"
    table.parent.mkdir()
    data = write_events(table, 64 * SAMPLED_BLOCK_BYTES)
    stat = table.stat()
    base = inputs_fingerprint([table], {})
    changed = bytearray(data)
    changed[SAMPLED_BLOCK_BYTES + 10] ^= 0xFF  # where an event table's key would not look
    table.write_bytes(bytes(changed))
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert inputs_fingerprint([table], {}) != base
    table.write_bytes(data)
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # only the mtime moved: still reused
    assert inputs_fingerprint([table], {}) == base
