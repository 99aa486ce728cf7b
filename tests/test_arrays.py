"""Crafted and mutated .npz archives and .npy files (mcsa.app.arrays, the one reader of
`quality --activations` and `attention --q/--k/--v`): each is read or refused with
exit 2 naming the file and the member, never exit 70, never a traceback.

The fuzz tests are seeded (the derandomized profile of conftest.py) and bounded."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcsa.app import arrays
from mcsa.cli import main

FUZZ = settings(max_examples=150, suppress_health_check=list(HealthCheck), deadline=None)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def npy_bytes(arr, allow_pickle=False) -> bytes:
    f = io.BytesIO()
    np.save(f, arr, allow_pickle=allow_pickle)
    return f.getvalue()


def header_bytes(header: str, version=(1, 0)) -> bytes:
    """An .npy preamble with ``header`` taken as it is (padded to 64 bytes, newline-ended)."""
    text = header.encode("latin1")
    size = 2 if version == (1, 0) else 4
    pad = -(6 + 2 + size + len(text) + 1) % 64
    body = text + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(body).to_bytes(size, "little") + body


def acts(t=20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(t)
    return {"q": rng.normal(size=(1, 2, t, 4)).astype(np.float32), "k": rng.normal(size=(1, 1, t, 4)).astype(np.float32),
            "v": rng.normal(size=(1, 1, t, 4)).astype(np.float32)}


def npz_bytes(members: dict[str, bytes]) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return f.getvalue()


def patched(data: bytes, local: int, central: int, value: int) -> bytes:
    """``value`` (u16) at ``local`` bytes into every local file header and ``central``
    into every central directory header."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = out.find(signature)
        while at >= 0:
            out[at + offset: at + offset + 2] = value.to_bytes(2, "little")
            at = out.find(signature, at + 4)
    return bytes(out)


def good_members() -> dict[str, bytes]:
    return {f"{n}.npy": npy_bytes(a) for n, a in acts().items()}


def crafted_q(case: str) -> bytes:
    """The .npy bytes of a crafted ``q``."""
    good = npy_bytes(acts()["q"])
    if case == "literal":
        return header_bytes("{'descr': (}")
    if case == "not-a-dict":
        return header_bytes("[1, 2, 3]")
    if case == "negative-shape":
        return header_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4)}") + bytes(16)
    if case == "truncated":
        return good[:-7]
    if case == "longer":
        return good + b"\x00" * 8
    if case == "object":
        return npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True)
    if case == "record":
        return npy_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]))
    if case == "version-3":
        return header_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", (3, 0)) + bytes(8)
    raise AssertionError(case)


NPY_CASES = [("literal", "header:"), ("not-a-dict", "header:"), ("negative-shape", "describes no array"),
             ("truncated", "holds fewer"), ("longer", "holds more"), ("object", "object or record arrays"),
             ("record", "object or record arrays"), ("version-3", "format version 3.0")]


@pytest.mark.parametrize("case, reason", NPY_CASES)
def test_quality_refuses_a_crafted_member_naming_file_and_member(tmp_path, case, reason):
    path = tmp_path / "a.npz"
    path.write_bytes(npz_bytes({**good_members(), "q.npy": crafted_q(case)}))
    refused(run("quality", "--activations", path), f"{path}, member q.npy: not a readable .npz/.npy", reason)


@pytest.mark.parametrize("case, reason", NPY_CASES)
def test_attention_refuses_a_crafted_npy_naming_option_and_file(tmp_path, case, reason):
    paths = []
    for name in "qkv":
        paths += [f"--{name}", tmp_path / f"{name}.npy"]
        (tmp_path / f"{name}.npy").write_bytes(npy_bytes(np.zeros(16, np.int8)))
    (tmp_path / "q.npy").write_bytes(crafted_q(case))
    refused(run("attention", *paths, "--dim", 4, "--scale", 0.5), f"--q {tmp_path / 'q.npy'}: cannot read as .npy",
            reason)


@pytest.mark.parametrize("case, reason", [
    ("encrypted", "member q.npy: not a readable .npz/.npy (encrypted)"),
    ("method-1", "member q.npy: not a readable .npz/.npy (compression method 1; stored and deflated are read)"),
    ("method-99", "member q.npy: not a readable .npz/.npy (compression method 99"),
    ("crc", "member q.npy: not a readable .npz/.npy (Bad CRC-32"),
    ("deflate-cut", "member q.npy: not a readable .npz/.npy"),
    ("bomb", "member q.npy: not a readable .npz/.npy (declares 2,147,483,648 bytes from"),
    *((case, ": not a readable .npz/.npy (not a zip archive") for case in ("not-zip", "cut-archive")),
])
def test_quality_refuses_a_crafted_archive(tmp_path, case, reason):
    path = tmp_path / "a.npz"
    data = npz_bytes(good_members())
    q_at = data.find(b"q.npy") + len("q.npy")  # the member's data start after its local header's name
    if case == "encrypted":
        data = patched(data, 6, 8, 0x1)
    elif case.startswith("method-"):
        data = patched(data, 8, 10, int(case[7:]))
    elif case == "crc":
        data = data[: q_at + 200] + bytes([data[q_at + 200] ^ 0xFF]) + data[q_at + 201:]
    elif case == "deflate-cut":
        f = io.BytesIO()
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for name, member in good_members().items():
                z.writestr(name, member)
        data = f.getvalue()
        start = data.find(b"q.npy") + len("q.npy")
        data = data[:start + 40] + bytes(20) + data[start + 60:]  # zeros in the middle of the deflate stream
    elif case == "bomb":  # q.npy's uncompressed size (local header +22, central +24) says 2 GiB
        out = bytearray(data)
        for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
            at = out.find(signature)
            while at >= 0:
                if out[at:].startswith(signature) and out.find(b"q.npy", at) in (at + 30, at + 46):
                    out[at + offset: at + offset + 4] = (2**31).to_bytes(4, "little")
                at = out.find(signature, at + 4)
        data = bytes(out)
    elif case == "not-zip":
        data = b"PK\x03\x04" + bytes(100)
    else:
        data = data[: len(data) // 2]
    path.write_bytes(data)
    refused(run("quality", "--activations", path), str(path), reason)


def test_a_member_that_reads_is_the_array_np_load_reads(tmp_path):
    path = tmp_path / "a.npz"
    want = {**acts(), "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "text": np.array(["x", "yz"])}
    np.savez_compressed(path, **want)
    found, held = arrays.read_npz(path, list(want) + ["missing"])
    assert held == list(want) and found.keys() == want.keys()
    for name, arr in want.items():
        assert found[name].dtype == arr.dtype and np.array_equal(found[name], arr)
    single = tmp_path / "f.npy"
    np.save(single, want["fortran"])
    assert np.array_equal(arrays.read_npy(single), want["fortran"])


def test_the_budget_sees_the_promised_bytes_before_any_array_is_read(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, **acts())
    seen = []

    def budget(n):
        seen.append(n)
        raise ValueError("too big")

    with pytest.raises(ValueError, match="too big"):
        arrays.read_npz(path, ["q", "v"], budget)
    assert seen == [(2 * 20 * 4 + 20 * 4) * 4]


# ---- fuzz: random bytes in, an array or UnreadableArray out ----------------------------------

def _mutated(data: bytes, draw) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at: at + draw(st.integers(1, 64))]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif out:
            out[at: at + 8] = bytes(len(out[at: at + 8]))
    return bytes(out)


@FUZZ
@given(data=st.data(), compressed=st.booleans())
def test_mutated_archives_read_or_refuse(tmp_path_factory, data, compressed):
    path = tmp_path_factory.mktemp("z") / "a.npz"
    (np.savez_compressed if compressed else np.savez)(path, **acts(8), layers=np.arange(1), tokens=np.arange(8))
    path.write_bytes(_mutated(path.read_bytes(), data.draw))
    try:
        found, _ = arrays.read_npz(path, ["q", "k", "v", "layers", "tokens"])
    except arrays.UnreadableArray as err:
        assert str(path) in str(err)
    else:
        assert all(isinstance(a, np.ndarray) and a.dtype.kind in arrays.KINDS for a in found.values())


@FUZZ
@given(data=st.data())
def test_mutated_npy_files_read_or_refuse(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("n") / "q.npy"
    path.write_bytes(_mutated(npy_bytes(np.arange(24, dtype=np.int8).reshape(2, 3, 4)), data.draw))
    try:
        arr = arrays.read_npy(path)
    except arrays.UnreadableArray as err:
        assert str(path) in str(err)
    else:
        assert arr.dtype.kind in arrays.KINDS


@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=st.data())
def test_quality_on_mutated_archives_ends_0_or_2(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("q") / "a.npz"
    np.savez(path, **acts(20))
    path.write_bytes(_mutated(path.read_bytes(), data.draw))
    result = run("quality", "--activations", path, "--partitions", 2, "--no-exact", "--masks", "reference,window")
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert str(path) in result.stderr, result.stderr


@pytest.mark.parametrize("option", ["--q", "--activations"])
def test_a_fifo_is_refused_as_such_not_called_an_unreadable_array(tmp_path, option):
    """``--q <(cat q.npy)`` was "not an array file": the sniff had read the pipe's first bytes."""
    fifo = tmp_path / "q.npy"
    os.mkfifo(fifo)
    if option == "--q":
        refused(run("attention", "--q", fifo, "--k", fifo, "--v", fifo, "--dim", 4, "--scale", 1),
                f"--q {fifo}: cannot read as .npy (a pipe, FIFO or device, which cannot be read twice")
    else:
        refused(run("quality", "--activations", fifo),
                f"{fifo}: not a readable .npz/.npy (a pipe, FIFO or device, which cannot be read twice")


@pytest.mark.parametrize("header", ["{'descr': f(), 'fortran_order': False, 'shape': (4,)}",
                                    "{'descr': '|i1', 'fortran_order': False, 'shape': (4,)\n8\x10\x172}"])
def test_a_header_that_is_no_literal_is_named_in_words_not_internals(tmp_path, header):
    """numpy's message quoted an ast object's repr (<ast.Call object at 0x...>) or raw bytes."""
    path = tmp_path / "q.npy"
    path.write_bytes(header_bytes(header) + bytes(4))
    result = run("attention", "--q", path, "--k", path, "--v", path, "--dim", 4, "--scale", 1)
    refused(result, f"--q {path}: cannot read as .npy (header: not the Python dict literal of shape, "
                    "fortran_order and descr that np.save writes)")
    assert "<ast." not in result.stderr and "\x10" not in result.stderr
