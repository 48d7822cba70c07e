"""Frame encodings of Dectris streams, checked against hdf5plugin's bitshuffle filter."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from saxsdog.io.codecs import (FrameDecodeError, bitshuffle_available, bitunshuffle, decode_frame,
                                    default_block_size, encode_frame, hdf5plugin_bslz4, parse_encoding)

IMPLEMENTATIONS = ["numpy"] + (["bitshuffle"] if bitshuffle_available() else [])


def frame(shape=(1043, 981), dtype=np.uint32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.poisson(20.0, size=shape).astype(dtype)
    a[::97, :] = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else -1  # detector gaps
    return a


def test_parse_encoding():
    assert parse_encoding("bs32-lz4<") == ("bslz4", 32, "<")
    assert parse_encoding("bs16-lz4>") == ("bslz4", 16, ">")
    assert parse_encoding("lz4<") == ("lz4", None, "<")
    assert parse_encoding("<") == ("raw", None, "<")
    assert parse_encoding("") == ("raw", None, "<")
    for bad in ("gzip", "bs32<", "bs12-lz4<", "lz4<<"):
        with pytest.raises(FrameDecodeError, match="unknown encoding"):
            parse_encoding(bad)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", [np.uint32, np.uint16, np.int32, np.uint8])
@pytest.mark.parametrize("shape", [(1043, 981), (100, 101), (7, 9), (1, 3)])
@pytest.mark.slow
def test_bitshuffle_lz4_blobs_of_hdf5plugin_decode_exactly(implementation, dtype, shape):
    a = frame(shape, dtype)
    blob = hdf5plugin_bslz4(a)  # the HDF5 filter's chunk: what an Eiger stores and sends
    assert struct.unpack_from(">Q", blob)[0] == a.nbytes
    enc = f"bs{np.dtype(dtype).itemsize * 8}-lz4<"
    out = decode_frame(blob, np.dtype(dtype).name, shape, enc, implementation=implementation)
    assert out.dtype == dtype and out.shape == shape and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, a)


@pytest.mark.skipif(not bitshuffle_available(), reason="the bitshuffle package is not installed")
def test_our_bitshuffle_encoder_makes_the_hdf5_filter_bytes():
    a = frame()
    assert encode_frame(a, "bs32-lz4<", implementation="bitshuffle") == hdf5plugin_bslz4(a)


def test_numpy_bitunshuffle_inverts_a_hand_made_shuffle():
    rng = np.random.default_rng(1)
    elems = rng.integers(0, 2**32, size=(3, 64), dtype=np.uint64).astype(np.uint32)
    raw = elems.view(np.uint8).reshape(3, 64, 4)  # [block, element, byte]
    bits = np.unpackbits(raw[..., None], axis=3, bitorder="little")  # [block, element, byte, bit]
    shuffled = np.packbits(bits.transpose(0, 2, 3, 1), axis=3, bitorder="little")  # [block, byte, bit, el/8]
    out = bitunshuffle(shuffled.reshape(3, -1), 4)
    np.testing.assert_array_equal(out.view(np.uint32), elems)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_header_less_blobs_as_the_eiger_simulator_sends(implementation):
    a = frame((300, 301), np.uint16)
    blob = hdf5plugin_bslz4(a)[12:]  # bitshuffle.compress_lz4 output: no 12-byte header
    out = decode_frame(blob, "uint16", a.shape, "bs16-lz4<", implementation=implementation)
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("encoding", ["lz4<", "<", "", "lz4>", ">", "bs32-lz4<", "bs32-lz4>"])
def test_round_trips(encoding):
    a = frame((200, 150), np.uint32, seed=4)
    blob = encode_frame(a, encoding)
    out = decode_frame(blob, "uint32", a.shape, encoding)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_block_size_default_matches_the_filter():
    assert default_block_size(4) == 2048 and default_block_size(2) == 4096 and default_block_size(1) == 8192
    blob = hdf5plugin_bslz4(frame((64, 64)))
    assert struct.unpack_from(">I", blob, 8)[0] == 8192


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_malformed_blobs_raise_instead_of_crashing(implementation):
    a = frame((300, 301))
    blob = hdf5plugin_bslz4(a)
    corrupt = bytearray(blob)
    corrupt[200:260] = bytes(60)
    cases = {
        "truncated": blob[:-10],
        "too long": blob + b"xx",
        "huge block size": blob[:12] + b"\xff\xff\xff\xff" + blob[16:],
        "empty": b"",
        "header only": blob[:12],
        "corrupt LZ4": bytes(corrupt),
    }
    for what, bad in cases.items():
        with pytest.raises(FrameDecodeError):
            decode_frame(bad, "uint32", a.shape, "bs32-lz4<", implementation=implementation)
            pytest.fail(what)
    with pytest.raises(FrameDecodeError, match="32-bit elements"):
        decode_frame(blob, "uint16", a.shape, "bs32-lz4<")
    with pytest.raises(FrameDecodeError, match="LZ4"):
        decode_frame(b"\x00" * 50, "uint32", a.shape, "lz4<")
    with pytest.raises(FrameDecodeError, match="raw frame"):
        decode_frame(a.tobytes()[:-4], "uint32", a.shape, "<")
    with pytest.raises(FrameDecodeError, match="pixel type"):
        decode_frame(a.tobytes(), "complex64", a.shape, "<")


def test_compiled_framing_check_agrees_with_the_python_walk():
    """The fast (numba) framing check accepts exactly the blobs the detailed walk accepts."""
    from saxsdog.io import codecs

    if codecs._block_scanner() is None:
        pytest.skip("numba is not installed: only the Python walk exists")
    a = frame((300, 301))
    blob = hdf5plugin_bslz4(a)
    n = a.size
    rng = np.random.default_rng(1)
    variants = [blob, blob[:-10], blob + b"xx", blob[:12], blob[:12] + b"\x00\x00\x00\x00" + blob[16:]]
    for _ in range(200):  # flip a byte of a block-size field or of the data
        b = bytearray(blob)
        pos = int(rng.integers(12, len(b)))
        b[pos] = int(rng.integers(0, 256))
        variants.append(bytes(b))
    accepted = 0
    for v in variants:
        buf = memoryview(v)
        try:
            codecs._bslz4_layout(buf, 4, n, want_blocks=True)
            python_ok = True
        except FrameDecodeError:
            python_ok = False
        try:
            _, _, blocks = codecs._bslz4_layout(buf, 4, n, want_blocks=False)
            fast_ok = True
            assert blocks == []  # accepted by the compiled check, not by the fallback walk
        except FrameDecodeError:
            fast_ok = False
        assert fast_ok == python_ok
        accepted += python_ok
    assert 0 < accepted < len(variants)  # both outcomes were exercised


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("encoding", ["bs32-lz4<", "bs32-lz4>", "lz4<", "<", ">", "h5lz4<"])
def test_decoding_into_a_reused_array_gives_the_same_pixels(implementation, encoding):
    """``out=``: the frame lands in the caller's array (a worker's buffer), for every encoding."""
    out = np.full((200, 150), 7, dtype=np.uint32)
    for seed in (4, 5):  # the second frame overwrites the first one completely
        a = frame((200, 150), np.uint32, seed=seed)
        blob = encode_frame(a, encoding)
        got = decode_frame(blob, "uint32", a.shape, encoding, implementation=implementation, out=out)
        assert got is out
        np.testing.assert_array_equal(out, a)


def test_decoding_into_a_read_buffer_reuses_its_array():
    from saxsdog.io.images import ReadBuffer

    buffer = ReadBuffer()
    a, b = frame((120, 130), np.uint32, seed=1), frame((120, 130), np.uint32, seed=2)
    first = decode_frame(encode_frame(a, "bs32-lz4<"), "uint32", a.shape, "bs32-lz4<", buffer=buffer)
    np.testing.assert_array_equal(first, a)
    second = decode_frame(encode_frame(b, "bs32-lz4<"), "uint32", b.shape, "bs32-lz4<", buffer=buffer)
    assert second is first  # one array per worker, not one per frame
    np.testing.assert_array_equal(second, b)


def test_an_array_that_does_not_fit_is_refused_before_decoding():
    a = frame((50, 60), np.uint32)
    blob = encode_frame(a, "bs32-lz4<")
    for bad in (np.empty((60, 50), np.uint32), np.empty((50, 60), np.int32), np.empty((50, 60), ">u4"),
                np.empty((60, 100), np.uint32)[:50, :60], np.empty((50, 60), np.uint32)[::-1]):
        with pytest.raises(ValueError, match="cannot decode a 50×60 uint32 frame"):
            decode_frame(blob, "uint32", a.shape, "bs32-lz4<", out=bad)


@pytest.mark.skipif(not bitshuffle_available(), reason="the bitshuffle package is not installed")
def test_the_c_decoder_reports_corrupt_lz4_inside_a_valid_framing():
    """The C entry point's error codes become FrameDecodeError; the target may be garbage but the
    process lives."""
    from saxsdog.io import codecs

    assert codecs._c_decompress_lz4() is not None  # the wheel exports bshuf_decompress_lz4
    a = frame((300, 301))
    blob = bytearray(hdf5plugin_bslz4(a))
    blob[16:80] = bytes(range(64))  # the first block's LZ4 data, its size field kept
    with pytest.raises(FrameDecodeError, match="do not decode"):
        decode_frame(bytes(blob), "uint32", a.shape, "bs32-lz4<", out=np.empty(a.shape, np.uint32))


def test_warm_up_and_the_simd_path():
    from saxsdog.io import codecs

    codecs.warm_up()
    assert codecs.simd_path() in ("AVX512", "AVX2", "SSE2", "NEON", "scalar", "numpy")
    if bitshuffle_available():
        assert codecs.simd_path() != "numpy"


@pytest.mark.slow
@pytest.mark.skipif(not bitshuffle_available(), reason="the bitshuffle package is not installed")
def test_corrupted_blobs_into_a_buffer_fail_cleanly_or_agree_with_the_numpy_decoder():
    """Random byte flips and cuts: the C decoder writing into the caller's buffer never crashes,
    and whatever it accepts, the reference decoder accepts with the same pixels."""
    a = frame((300, 301))
    blob = hdf5plugin_bslz4(a)
    rng = np.random.default_rng(7)
    out = np.empty(a.shape, np.uint32)
    outcomes = set()
    for _ in range(100):
        bad = bytearray(blob)
        for pos in rng.integers(0, len(bad), size=int(rng.integers(1, 4))):
            bad[int(pos)] = int(rng.integers(0, 256))
        if rng.random() < 0.2:
            bad = bad[: int(rng.integers(0, len(bad)))]
        try:
            got = decode_frame(bytes(bad), "uint32", a.shape, "bs32-lz4<", out=out).copy()
        except FrameDecodeError:
            with pytest.raises(FrameDecodeError):
                decode_frame(bytes(bad), "uint32", a.shape, "bs32-lz4<", implementation="numpy")
            outcomes.add("refused")
            continue
        np.testing.assert_array_equal(got, decode_frame(bytes(bad), "uint32", a.shape, "bs32-lz4<",
                                                        implementation="numpy"))
        outcomes.add("decoded")
    assert outcomes == {"refused", "decoded"}


@pytest.mark.skipif(not bitshuffle_available(), reason="the bitshuffle package is not installed")
def test_the_framing_is_checked_while_decoding_not_in_a_walk_before(monkeypatch):
    """The fused decoder reads the blob once: a valid frame never goes through the separate
    framing walk (a chain of dependent reads over the whole blob before the decoder read it
    again: 0.05-0.2 ms per Pilatus 1M frame in a worker), yet a broken framing is still
    refused with the walk's precise message."""
    from saxsdog.io import codecs

    if codecs._fused_decoder() is None:
        pytest.skip("no fused decoder for this bitshuffle build")
    a = frame((300, 301))
    blob = hdf5plugin_bslz4(a)
    real_walk = codecs._bslz4_layout
    walks = []
    monkeypatch.setattr(codecs, "_bslz4_layout", lambda *args, **kw: walks.append(1) or real_walk(*args, **kw))
    out = np.empty(a.shape, np.uint32)
    np.testing.assert_array_equal(decode_frame(blob, "uint32", a.shape, "bs32-lz4<", out=out), a)
    np.testing.assert_array_equal(decode_frame(bytearray(blob), "uint32", a.shape, "bs32-lz4<"), a)
    assert walks == []
    with pytest.raises(FrameDecodeError, match=r"block \d+ claims \d+ bytes, \d+ are left"):
        decode_frame(blob[:-10], "uint32", a.shape, "bs32-lz4<", out=out)
    with pytest.raises(FrameDecodeError, match=r"block 0 claims 4294967295 bytes"):
        decode_frame(blob[:12] + b"\xff\xff\xff\xff" + blob[16:], "uint32", a.shape, "bs32-lz4<", out=out)
    assert walks  # the errors were named by the walk


@pytest.mark.skipif(not bitshuffle_available(), reason="the bitshuffle package is not installed")
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32])
@pytest.mark.parametrize("shape", [(1043, 981), (8, 8), (3, 5), (1, 2049), (37, 1231)])
def test_the_fused_decoder_gives_the_pixels_of_bitshuffles_own_decoder(dtype, shape):
    """Every element size, full and short last blocks and the raw left-over elements
    (``n % 8``), with and without the 12-byte header, in both byte orders."""
    import bitshuffle

    from saxsdog.io import codecs

    if codecs._fused_decoder() is None:
        pytest.skip("no fused decoder for this bitshuffle build")
    a = frame(shape, dtype=dtype, seed=11)
    bits = 8 * a.dtype.itemsize
    for order in "<>":
        enc = f"bs{bits}-lz4{order}"
        blob = encode_frame(a, enc)
        want = bitshuffle.decompress_lz4(np.frombuffer(blob, np.uint8)[12:], (a.size,),
                                         a.dtype.newbyteorder(order), default_block_size(a.dtype.itemsize))
        np.testing.assert_array_equal(want.reshape(shape), a)
        for data in (blob, blob[12:]):  # the header-less form as the Eiger simulator sends it
            got = decode_frame(data, np.dtype(dtype).name, shape, enc, out=np.empty(shape, dtype))
            np.testing.assert_array_equal(got, a)


@pytest.mark.skipif(not bitshuffle_available(), reason="the bitshuffle package is not installed")
def test_without_the_fused_decoder_the_walk_and_bitshuffles_decoder_still_decode(monkeypatch):
    """The path of builds where the fused decoder is not available (or failed its self-check)."""
    from saxsdog.io import codecs

    monkeypatch.setattr(codecs, "_fused_decoder", lambda: None)
    a = frame((300, 301))
    blob = hdf5plugin_bslz4(a)
    out = np.empty(a.shape, np.uint32)
    np.testing.assert_array_equal(decode_frame(blob, "uint32", a.shape, "bs32-lz4<", out=out), a)
    with pytest.raises(FrameDecodeError, match="claims"):
        decode_frame(blob[:-10], "uint32", a.shape, "bs32-lz4<", out=out)
    corrupt = bytearray(blob)
    corrupt[16:80] = bytes(range(64))
    with pytest.raises(FrameDecodeError, match="do not decode"):
        decode_frame(bytes(corrupt), "uint32", a.shape, "bs32-lz4<", out=out)
