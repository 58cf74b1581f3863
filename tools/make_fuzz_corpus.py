#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the
repo's own fixtures. Run by hand from the repo root; the output is committed.

framer: the first byte picks the read size, the rest is a byte stream.
decode: small JPEG/PNG files of every kind the decoder handles.
bundle: first byte even = a whole file, odd = bundle metadata (JSON text).
"""
import io, json, os, struct, zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def png(w, h, color_type, bit_depth, rows, palette=None):
    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    if palette:
        out += chunk(b"PLTE", palette)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


requests = [
    b'{"cmd": 0x01, "request_data": ["normal_1.jpg", "sub/a.png"]}',
    b'{"cmd": 1, "request_data": ["0x1f.jpg"]}{"cmd": 0x22, "request_data": null}\n',
    b'{"cmd": 0x03, "request_data": null}\r\n{"cmd": 0x24, "request_data": []}',
    b'{"cmd": 0x20, "request_data": ["http://h:1/m.safetensors"]}',
    b'{"cmd": 0x26, "request_data": ["best.pt"]}{"cmd": 0x28, "request_data": ["x.safetensors"]}',
    b'{"cmd": 0x30, "request_data": ["/images"]}{"cmd": 0x32, "request_data": null}{"cmd": 0x34, "request_data": ["m"]}',
    b'garbage\n{"cmd": 0x22, "request_data": nul}[1, 2]{"a": "\\"}{"}',
    b'{"cmd": 0x22, "request_data": [}{"cmd": 0xffffffffffffffffff, "request_data": null}',
    b'{"cmd": 0x01, "request_data": ["' + b"a" * 600 + b'.jpg"]}',
    b'{"cmd": 0x01, "request_data": {"x": 1}}{"cmd": 0x22, "request_data": null}',
]
for i, r in enumerate(requests):
    for chunk in (1, 7, 31):
        write("framer", f"req{i}_chunk{chunk}", bytes([chunk - 1]) + r)

jpegs = ROOT / "tests" / "fixtures" / "jpeg"
for f in ["odd_1x1.jpg", "odd_33x1_422.jpg", "odd_1x40_440.jpg", "odd_17x13_420.jpg", "exif_big_endian_6.jpg",
          "exif_orientation_5.jpg", "cmyk_progressive.jpg", "grey_progressive.jpg", "progressive_422_q50.jpg",
          "refused_header_only.jpg", "refused_not_jpeg_after_soi.jpg"]:
    data = (jpegs / f).read_bytes()
    write("decode", f, data)
    write("decode", "cut_" + f, data[: len(data) // 2])
write("decode", "rgb8.png", png(3, 2, 2, 8, [bytes(range(9)), bytes(range(9, 18))]))
write("decode", "grey16.png", png(2, 2, 0, 16, [b"\x00\x01\xff\xff", b"\x12\x34\x56\x78"]))
write("decode", "rgba8.png", png(2, 1, 6, 8, [bytes(range(8))]))
write("decode", "palette4.png", png(4, 2, 3, 4, [b"\x01\x23", b"\x32\x10"], palette=bytes(range(12))))
write("decode", "grey_alpha.png", png(1, 2, 4, 8, [b"\x10\x20", b"\x30\x40"]))
write("decode", "no_iend.png", png(3, 2, 2, 8, [bytes(range(9)), bytes(range(9, 18))])[:-12])
write("decode", "huge_header.png", png(23000, 23000, 0, 8, [b"\x00"]))

good = {
    "format": "pear-bundle/1",
    "detector": {"arch": "yolov8", "class_names": ["pear"], "imgsz": 320},
    "classifier": {"arch": "efficientnet", "class_names": ["a", "b"], "input_size": 96,
                   "channel_order": "rgb", "mean": [0, 0, 0], "std": [1, 1, 1]},
}
variants = [good]
for path, value in [(("detector", "imgsz"), 4096), (("classifier", "input_size"), 2048), (("detector", "fruit_class"), 3),
                    (("classifier", "std"), [0, 1, 1]), (("format",), "pear-bundle/2"), (("detector", "stride"), 0)]:
    v = json.loads(json.dumps(good))
    node = v
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    variants.append(v)
for i, v in enumerate(variants):
    write("bundle", f"meta{i}", b"\x01" + json.dumps(v).encode())
write("bundle", "meta_not_json", b"\x01{\"format\": ")
# Whole files: a tiny valid container, and the default bundle's header alone.
header = json.dumps({"__metadata__": {"pear_bundle": json.dumps(good)},
                     "detector.x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
write("bundle", "file_tiny", b"\x00" + struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.0))
default = (ROOT / "weights" / "pear-default.safetensors").read_bytes()
n = struct.unpack("<Q", default[:8])[0]
write("bundle", "file_default_header", b"\x00" + default[: 8 + n])
print("corpus written to", OUT)
