#!/usr/bin/env bash
# Seed corpora for the fuzz targets, generated into $1/<target>/ (decode, safetensors, json, index, index_cache,
# config): small JPEGs (baseline, progressive, grayscale, CMYK, 4:2:0 and 4:4:4, restart markers, EXIF orientation)
# and PNGs (RGB, RGBA, gray, palette, 16-bit) made with Debian's python3-pil, plus a few photos from the test images
# cache (~/.cache/sslight/test_images, tests/data/fetch_test_images.sh) when present; safetensors files in the
# format engine/io/safetensors.cpp writes (every dtype, empty tensors, metadata); JSON snippets; list files; index
# caches in data/dataset.cpp's format; the shipped configs/*.toml and edge-case TOML, some with --set pieces.
#   make_corpus.sh DIR                          everything above
#   make_corpus.sh --checkpoint FUZZ_BIN DIR    DIR/checkpoint/: real checkpoints written by fuzz_checkpoint itself
set -euo pipefail
if [[ ${1:-} == --checkpoint ]]; then
    bin=${2:?usage: make_corpus.sh --checkpoint FUZZ_CHECKPOINT_BINARY DIR}
    out=${3:?usage: make_corpus.sh --checkpoint FUZZ_CHECKPOINT_BINARY DIR}
    rm -rf "$out/checkpoint"
    mkdir -p "$out/checkpoint"
    SSLIGHT_FUZZ_WRITE_SEEDS="$out/checkpoint" ASAN_OPTIONS=detect_leaks=0 "$bin"
    exit 0
fi
out=${1:?usage: make_corpus.sh DIR}
configs=$(cd "$(dirname "$0")/../configs" && pwd)
mkdir -p "$out"/{decode,safetensors,json,index,index_cache,config}
py=/usr/bin/python3
[[ -x $py ]] || py=python3
"$py" - "$out" "$configs" <<'PY'
import glob, io, json, os, struct, sys
out, configs = sys.argv[1], sys.argv[2]

def put(sub, name, data):
    with open(os.path.join(out, sub, name), "wb") as f:
        f.write(data)

# ---- images -------------------------------------------------------------------------------------------
try:
    from PIL import Image
    def pattern(w, h, mode="RGB"):
        im = Image.new("RGB", (w, h))
        im.putdata([((x * 37 + y * 11) % 256, (x * 5 + y * 29) % 256, (x * y) % 256)
                    for y in range(h) for x in range(w)])
        return im.convert(mode) if mode != "RGB" else im
    def save(name, im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        put("decode", name, b.getvalue())
    save("baseline_420.jpg", pattern(37, 23), "JPEG", quality=80)
    save("baseline_444.jpg", pattern(17, 31), "JPEG", quality=90, subsampling=0)
    save("progressive.jpg", pattern(40, 24), "JPEG", progressive=True)
    save("gray.jpg", pattern(21, 13, "L"), "JPEG")
    save("cmyk.jpg", pattern(16, 16, "CMYK"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6
    save("orient6.jpg", pattern(24, 10), "JPEG", exif=exif.tobytes())
    save("rgb.png", pattern(19, 7), "PNG")
    save("rgba.png", pattern(9, 14, "RGBA"), "PNG")
    save("gray.png", pattern(11, 5, "L"), "PNG")
    save("palette.png", pattern(13, 6, "P"), "PNG")
    save("gray16.png", pattern(7, 7, "L").convert("I;16"), "PNG")
    save("tiny.gif", pattern(6, 5, "P"), "GIF")
    save("tiny.bmp", pattern(5, 3), "BMP")
except ImportError:
    pass

# ---- safetensors (the layout save_safetensors writes: sorted names, 8-byte aligned header) ---------------
def safetensors(tensors, meta=None):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data
f32 = lambda vals: struct.pack("<%df" % len(vals), *vals)
put("safetensors", "one_f32.safetensors", safetensors({"w": ("F32", [2, 3], f32([0.5, -1, 2, 3.25, 4, -5]))}))
put("safetensors", "all_dtypes.safetensors", safetensors({
    "a": ("F64", [2], struct.pack("<2d", 1.5, -2)), "b": ("BF16", [3], b"\x80\x3f\x00\x40\x40\x40"),
    "c": ("I64", [1, 1], struct.pack("<q", -7)), "d": ("I32", [2], struct.pack("<2i", 3, 9)),
    "e": ("U8", [5], bytes([1, 2, 3, 250, 255])), "f": ("F32", [0, 4], b"")}, {"format": "pt", "epoch": "3"}))
put("safetensors", "empty.safetensors", safetensors({}))
put("safetensors", "scalar.safetensors", safetensors({"s": ("F32", [], f32([7.0]))}))

# ---- JSON --------------------------------------------------------------------------------------------------
snippets = ['{}', '[]', 'null', 'true', '0', '-1.5e-3', '"a\\u00e9\\ud83d\\ude00\\n"', '[1,[2,[3,[4]]]]',
            '{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}', '{"a":{"b":[true,false,null]},"c":"\\"x\\""}',
            '18446744073709551615', '-9223372036854775808', '{"__metadata__":{"k":"v"}}', ' [ 1 , 2 ] ']
for i, s in enumerate(snippets):
    put("json", "s%02d.json" % i, s.encode())

# ---- list files ----------------------------------------------------------------------------------------------
lists = ["a.jpg 0\nb.jpg 1\n", "# comment\n\n/abs/path/x.png 3\r\nrel dir/with space.jpg\t2\n",
         "train/n01440764/img 1.JPEG 0\ntrain/n01443537/img.JPEG 999\n", "x 0"]
for i, s in enumerate(lists):
    put("index", "l%d.txt" % i, s.encode())

# ---- ImageFolder index caches (data/dataset.cpp): first byte odd = after fuzz_index_cache's genuine header ------
body = "classes 2\ncat\ndog\nsamples 4\n0 cat/a.jpg\n0 cat/b.png\n1 dog/c.JPEG\n1 dog/sub/d.jpg\n"
put("index_cache", "body.bin", b"\x01" + body.encode())
put("index_cache", "body_one_class.bin", b"\x01classes 1\ncat\nsamples 1\n0 cat/a.jpg\n")
put("index_cache", "whole.bin", b"\x00sslight-index 1\nroot /dev/shm/x\ndirs 1\n1 2 .\n" + body.encode())

# ---- configs: the shipped ones, edge cases, and --set overrides after NUL bytes (fuzz_config) -----------------
for path in sorted(glob.glob(os.path.join(configs, "*.toml"))):
    with open(path, "rb") as f:
        put("config", os.path.basename(path), f.read())
tomls = ['[run]\nname = "x"\nseed = 1_000\n', 'run.epochs = 3 # c\n[data]\nglobal_scale = [0.3, 1.0,]\n',
         "[method]\nname = 'swav'\nlambda_gg = 0.4\n[data]\nlocal_scale = [\n  0.05,\n  0.3\n]\n",
         '[optim]\nbase_lr = 5e-4\noptimizer = "adamw"\nweight_decay = 0.04\nweight_decay_end = 0.4\n',
         '[model]\nbackbone = "vit_tiny"\ndrop_path_rate = 0.1\n[method]\ndino_out_dim = 65536\n',
         '"run"."name" = "q\\"uote\\\\ \\t"\n', '[eval]\nknn_at_end = false\nknn_temperature = inf\n']
for i, t in enumerate(tomls):
    put("config", "edge%d.toml" % i, t.encode())
sets = [("[run]\nepochs = 4\n", ["run.batch_size=8", "data.n_local=0"]),
        ("", ["method.name=moco", "method.moco_queue=64", "run.batch_size=16"]),
        ("[data]\nglobal_size = 32\n", ["data.local_size=16", "run.name=a b", "optim.optimizer=sgd"])]
for i, (t, s) in enumerate(sets):
    put("config", "sets%d.bin" % i, "\0".join([t] + s).encode())
PY
# A few real photographs when the test images cache has them (they make the decoder reach deeper code).
cache=${SSLIGHT_TEST_IMAGES:-$HOME/.cache/sslight/test_images}
for f in variants/progressive.jpg variants/restart.jpg variants/cmyk.jpg variants/arith.jpg photos/box.png; do
    if [[ -s $cache/$f ]] && (($(stat -c %s "$cache/$f") < 200000)); then
        cp "$cache/$f" "$out/decode/cache_${f//\//_}"
    fi
done
exit 0
