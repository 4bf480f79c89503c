#!/usr/bin/env python3
"""Writes fixtures/bad: one small file per kind of bad input that Pyra must refuse cleanly.

Standard library only, plus the `pyra` binary for the two tiny models (`pyra init`) and a
valid JPEG to cut short (a CBSD432 training photo by default). Every file is made from a valid one by a described
change, so a test can tell what each must be refused for. Run once; the outputs are committed.

    cargo build --release && python3 tools/make_bad_inputs.py --pyra target/release/pyra

The malicious checkpoint is a real PyTorch-format zip whose pickle calls
`os.system("touch pyra_marker_ran")` when unpickled by Python's `pickle` (this script checks
that it does, in a temporary folder); Pyra's reader must refuse it without running anything.
"""
import argparse
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "bad")


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(width, height, pixels, colour_type=2):
    """An 8-bit PNG; `pixels` is the raw interleaved bytes (rows without filter bytes)."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = width * channels
    raw = b"".join(b"\x00" + pixels[y * row:(y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def gradient(width, height, channels):
    return bytes((x * 7 + y * 13 + c * 50) % 256
                 for y in range(height) for x in range(width) for c in range(channels))


def tiff_gray8(width, height, pixels):
    """A baseline little-endian TIFF, 8-bit gray, one strip."""
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 0), (277, 3, 1, 1), (278, 3, 1, height),
               (279, 4, 1, len(pixels))]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = ifd_offset + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            value = data_offset
        packed = struct.pack("<HHI", tag, kind, count)
        packed += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + pixels


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def read_safetensors(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    metadata = header.pop("__metadata__", None)
    data = blob[8 + n:]
    tensors = [(name, h["dtype"], h["shape"], data[h["data_offsets"][0]:h["data_offsets"][1]])
               for name, h in header.items()]
    return tensors, metadata


class Marker:
    """Unpickling this calls os.system: the classic malicious checkpoint."""

    def __reduce__(self):
        return (os.system, ("touch pyra_marker_ran",))


def malicious_pt():
    """A PyTorch zip checkpoint (archive/data.pkl, archive/version) with a `__reduce__` payload
    as the value of a state-dict key."""
    return torch_zip(pickle.dumps({"head.0.weight": Marker()}, protocol=2))


def torch_zip(data_pkl, storages=()):
    """A PyTorch zip checkpoint holding the given pickle and raw storages (fixed timestamps,
    so the bytes are the same on every run)."""
    path = tempfile.mktemp(suffix=".pt")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        entries = [("archive/data.pkl", data_pkl)]
        entries += [(f"archive/data/{key}", raw) for key, raw in storages]
        entries += [("archive/version", b"3\n")]
        for name, raw in entries:
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), raw)
    blob = open(path, "rb").read()
    os.remove(path)
    return blob


def expanded_view_pt():
    """A state dict whose one tensor is a 100000 x 100000 view with strides (0, 0) of a
    one-float storage, as `torch.zeros(1).expand(100000, 100000)` saves: 4 bytes that claim
    40 GB. The pickle is written opcode by opcode (protocol 2), as torch.save writes it."""
    def s(text):
        raw = text.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def i(value):
        return b"J" + struct.pack("<i", value)

    pkl = (b"\x80\x02" + b"ccollections\nOrderedDict\n)R"           # OrderedDict()
           + s("head.0.weight")
           + b"ctorch._utils\n_rebuild_tensor_v2\n("                 # callable, MARK
           + b"(" + s("storage") + b"ctorch\nFloatStorage\n" + s("0") + s("cpu") + i(1)
           + b"tQ"                                                     # persistent id
           + i(0) + i(100000) + i(100000) + b"\x86" + i(0) + i(0) + b"\x86"
           + b"\x89" + b"ccollections\nOrderedDict\n)R"              # False, OrderedDict()
           + b"tR" + b"s.")                                            # call, SETITEM, STOP
    return torch_zip(pkl, [("0", struct.pack("<f", 1.0))])


def memo_bomb_pt():
    """A pickle in which list i holds list i-1 twice, 40 levels deep: 2^40 values from a few
    hundred bytes to a reader that copies memoized objects instead of sharing them."""
    pkl = bytearray(b"\x80\x02]q\x00")
    for level in range(1, 41):
        pkl += bytes([ord("]"), ord("("), ord("h"), level - 1, ord("h"), level - 1, ord("e"),
                      ord("q"), level])
    pkl += b"."
    return torch_zip(bytes(pkl))


def check_malicious_is_live(blob):
    """Python's pickle really runs the payload (in a scratch folder)."""
    with tempfile.TemporaryDirectory() as scratch:
        here = os.getcwd()
        os.chdir(scratch)
        try:
            open("m.pt", "wb").write(blob)
            with zipfile.ZipFile("m.pt") as z:
                pickle.loads(z.read("archive/data.pkl"))  # runs `touch pyra_marker_ran`
            assert os.path.exists("pyra_marker_ran"), "the payload did not run under pickle"
        finally:
            os.chdir(here)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pyra", default="target/release/pyra")
    parser.add_argument("--jpeg", default="../shared/data/train/CBSD432/42012.jpg",
                        help="a valid JPEG to cut short")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)

    def write(name, blob):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(blob)
        print(f"{name}: {len(blob)} bytes")

    good = png(16, 16, gradient(16, 16, 3))
    write("good_16x16.png", good)
    write("not_an_image.png", b"These are words, not pixels.\n")
    write("truncated.png", good[: len(good) // 2])
    # The IDAT's compressed stream damaged in its middle: the chunk CRC no longer matches.
    damaged = bytearray(good)
    idat = damaged.index(b"IDAT")
    for i in range(idat + 20, idat + 40):
        damaged[i] ^= 0x5A
    write("corrupt_data.png", bytes(damaged))
    # Width 0 in the header (CRC correct): an image with no pixels.
    write("zero_pixels.png", png(0, 16, b""))
    # A decompression bomb: the header claims 100000 x 100000 (10^10 pixels), the file is tiny.
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + png_chunk(b"IEND", b""))
    write("bomb.png", bomb)
    tiff = tiff_gray8(16, 16, gradient(16, 16, 1))
    write("truncated.tif", tiff[: len(tiff) - 100])
    write("one_pixel.png", png(1, 1, b"\x80\x80\x80"))

    with tempfile.TemporaryDirectory() as scratch:
        jpeg = open(args.jpeg, "rb").read()
        # Cut inside the entropy-coded data, before the end-of-image marker.
        write("truncated.jpg", jpeg[: len(jpeg) // 2])
        panet = os.path.join(scratch, "panet.safetensors")
        subprocess.run([args.pyra, "init", "--arch", "panet", "--set", "n_resblocks=2",
                        "--set", "n_feats=8", panet], check=True, stdout=subprocess.DEVNULL)
        gray = os.path.join(scratch, "gray.safetensors")
        subprocess.run([args.pyra, "init", "--arch", "dncnn", "--set", "image_channels=1",
                        "--set", "depth=3", "--set", "n_channels=8", gray],
                       check=True, stdout=subprocess.DEVNULL)
        tensors, metadata = read_safetensors(panet)
        gray_tensors, gray_metadata = read_safetensors(gray)

    # Float images (the float-noise protocol's safetensors images): NaN, Inf, two channels.
    def float_image(shape, values):
        return safetensors([("image", "F32", shape, struct.pack(f"<{len(values)}f", *values))])
    plane = [float((i * 7) % 255) for i in range(16 * 16)]
    write("nan_pixel.safetensors", float_image([3, 16, 16], plane[:100] + [float("nan")] + plane[101:] + plane * 2))
    write("inf_pixel.safetensors", float_image([3, 16, 16], plane * 2 + plane[:7] + [float("inf")] + plane[8:]))
    write("two_channels.safetensors", float_image([2, 16, 16], plane * 2))

    write("tiny_panet.safetensors", safetensors(tensors, metadata))
    write("tiny_gray_dncnn.safetensors", safetensors(gray_tensors, gray_metadata))

    def modified(change):
        out = [list(t) for t in tensors]
        change(out)
        return safetensors([tuple(t) for t in out], metadata)

    def nan_weight(ts):
        name, dtype, shape, raw = next(t for t in ts if t[0] == "head.0.weight")
        index = ts.index([name, dtype, shape, raw])
        ts[index][3] = struct.pack("<f", float("nan")) + raw[4:]
    write("nan_weights.safetensors", modified(nan_weight))

    def drop_key(ts):
        ts[:] = [t for t in ts if t[0] != "tail.0.weight"]
    write("missing_key.safetensors", modified(drop_key))

    def wrong_shape(ts):
        t = next(t for t in ts if t[0] == "head.0.weight")
        # [8, 3, 3, 3] -> [8, 3, 1, 9]: same bytes, another shape.
        t[2] = [t[2][0], t[2][1], 1, t[2][2] * t[2][3]]
    write("wrong_shape.safetensors", modified(wrong_shape))

    def extra_key(ts):
        ts.append(["body.9.unexpected.weight", "F32", [1], struct.pack("<f", 1.0)])
    write("unexpected_key.safetensors", modified(extra_key))

    write("unknown_architecture.safetensors",
          safetensors([("encoder.layer.0.weight", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))]))
    # PANet's keys and DnCNN's keys in one file, no architecture named.
    write("mixed_architectures.safetensors",
          safetensors(tensors + gray_tensors))

    official = open(os.path.join(OUT, "..", "panet", "panet_small_model_best.pt"), "rb").read()
    write("truncated.pt", official[:65536])
    write("garbage.pt", bytes((i * 7919 + 13) % 251 for i in range(4096)))
    write("expanded_view.pt", expanded_view_pt())
    write("memo_bomb.pt", memo_bomb_pt())
    blob = malicious_pt()
    check_malicious_is_live(blob)
    write("malicious.pt", blob)


if __name__ == "__main__":
    sys.exit(main())
