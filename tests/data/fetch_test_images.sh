#!/usr/bin/env bash
# Test images for tests/test_data.cpp, tests/test_parity_crop.cpp and bench/bench_decode.cpp, fetched or
# generated into the folder $1 (kept between runs: what exists is not redone). Nothing here is committed:
#   photos/    real photographs from Debian's opencv-doc package (examples/data, OpenCV's BSD-licensed sample
#              data), fetched with `apt-get download opencv-doc` (~96 MB, only the files below are kept)
#   variants/  cases generated from one photo with libjpeg-turbo's cjpeg/djpeg/jpegtran, ImageMagick and
#              exiftool: subsampling, progressive, restart markers, grayscale, arithmetic coding, CMYK, the 8
#              EXIF orientations, PNGs, and broken files (truncated, garbage, empty, absurd headers).
# No Debian package ships libjpeg-turbo's own testimages/ (testorig.jpg, testimg_ari.jpg, testorig12.jpg): the
# baseline and arithmetic cases are generated instead, and a true 12-bit JPEG cannot be made with Debian's
# 8-bit libjpeg-turbo 2.1.5, so precision12.jpg only declares 12 bits (it must be rejected as unsupported).
# Prints "photos: ok|SKIP <why>" and "variants: ok|SKIP <why>", also written to $1/STATUS.
set -u
out=${1:?usage: fetch_test_images.sh DIR}
mkdir -p "$out/photos" "$out/variants" || exit 1
cd "$out" || exit 1
# Tests running in parallel (ctest -j) share the folder: one fetches, the others wait for it.
exec 9>"$out/.lock"
command -v flock >/dev/null && flock 9
# ImageMagick: Debian's own binary (a wrapper earlier on PATH may only stand in for it).
convert_bin=$(command -v convert || true)
[[ -x /usr/bin/convert ]] && convert_bin=/usr/bin/convert

photos=(baboon.jpg fruits.jpg building.jpg board.jpg aero1.jpg leuvenA.jpg messi5.jpg home.jpg orange.jpg
        starry_night.jpg aloeL.jpg butterfly.jpg smarties.png rubberwhale1.png box.png)
missing=()
for p in "${photos[@]}"; do [[ -s photos/$p ]] || missing+=("$p"); done
if ((${#missing[@]})); then
    tmp=$(mktemp -d "$PWD/.download.XXXXXX")
    if (cd "$tmp" && apt-get download opencv-doc >"$tmp/log" 2>&1); then
        members=()
        for p in "${missing[@]}"; do members+=("./usr/share/doc/opencv-doc/examples/data/$p"); done
        dpkg-deb --fsys-tarfile "$tmp"/opencv-doc_*.deb | tar -x -C "$tmp" "${members[@]}" 2>/dev/null
        for p in "${missing[@]}"; do
            f=$tmp/usr/share/doc/opencv-doc/examples/data/$p
            [[ -s $f ]] && mv "$f" "photos/$p"
        done
    else
        why=$(tail -n 1 "$tmp/log")
    fi
    rm -rf "$tmp"
fi
have=0
for p in "${photos[@]}"; do [[ -s photos/$p ]] && have=$((have + 1)); done
if ((have == ${#photos[@]})); then
    photo_status="photos: ok"
else
    photo_status="photos: SKIP only $have of ${#photos[@]} opencv-doc photos (apt-get download opencv-doc failed: ${why:-?}; run apt-get update, or work offline without them)"
fi

# ---- variants ---------------------------------------------------------------------------------------------
v=variants
gen() {  # gen FILE COMMAND...: runs the command (writing FILE) unless FILE exists; removes a partial FILE
    local f=$1
    shift
    [[ -s $v/$f ]] && return 0
    if ! "$@"; then rm -f "$v/$f"; return 1; fi
}
patch_sof() {  # patch_sof SRC DST OFFSET HEXBYTES: copy SRC with bytes at SOF0 + OFFSET replaced
    local off
    off=$(LC_ALL=C grep -obUaP '\xff\xc0' "$1" | head -n 1 | cut -d: -f1)
    [[ -n $off ]] || return 1
    cp "$1" "$2.tmp" && printf "$4" | dd of="$2.tmp" bs=1 seek=$((off + $3)) conv=notrunc status=none && mv "$2.tmp" "$2"
}
variant_status="variants: ok"
if ! command -v cjpeg >/dev/null || ! command -v jpegtran >/dev/null || ! command -v exiftool >/dev/null ||
    [[ -z $convert_bin ]]; then
    variant_status="variants: SKIP needs cjpeg/djpeg/jpegtran (libjpeg-turbo-progs), exiftool (libimage-exiftool-perl) and convert (imagemagick): scripts/install_deps.sh --test"
else
    if [[ ! -s $v/_base.ppm ]]; then
        if [[ -s photos/fruits.jpg ]]; then
            djpeg -ppm photos/fruits.jpg >"$v/_base.ppm"
        else  # offline: a synthetic 512x480 picture
            "$convert_bin" -size 512x480 -seed 7 plasma:fractal -blur 0x1 -depth 8 "ppm:$v/_base.ppm"
        fi
    fi
    ok=1
    gen s420.jpg sh -c "cjpeg -quality 92 -sample 2x2 $v/_base.ppm >$v/s420.jpg" || ok=0
    gen s422.jpg sh -c "cjpeg -quality 92 -sample 2x1 $v/_base.ppm >$v/s422.jpg" || ok=0
    gen s444.jpg sh -c "cjpeg -quality 92 -sample 1x1 $v/_base.ppm >$v/s444.jpg" || ok=0
    gen progressive.jpg sh -c "cjpeg -quality 92 -progressive $v/_base.ppm >$v/progressive.jpg" || ok=0
    gen restart.jpg sh -c "cjpeg -quality 92 -restart 1 $v/_base.ppm >$v/restart.jpg" || ok=0
    gen gray.jpg sh -c "cjpeg -quality 92 -grayscale $v/_base.ppm >$v/gray.jpg" || ok=0
    gen arith.jpg sh -c "jpegtran -arithmetic $v/s420.jpg >$v/arith.jpg" || ok=0
    gen cmyk.jpg "$convert_bin" "$v/_base.ppm" -colorspace CMYK -quality 92 "$v/cmyk.jpg" || ok=0
    gen png_rgb.png "$convert_bin" "$v/_base.ppm" "$v/png_rgb.png" || ok=0
    gen png_gray.png "$convert_bin" "$v/_base.ppm" -colorspace Gray "$v/png_gray.png" || ok=0
    gen png_rgba.png "$convert_bin" "$v/_base.ppm" -alpha set -channel A -evaluate set 60% "$v/png_rgba.png" || ok=0
    # orient<N>.jpg stores the picture so that applying EXIF orientation N gives s444.jpg back (lossless
    # jpegtran transforms: the dimensions are multiples of the 8x8 MCU).
    transforms=("" "" "-flip horizontal" "-rotate 180" "-flip vertical" "-transpose" "-rotate 270" "-transverse" "-rotate 90")
    for o in 1 2 3 4 5 6 7 8; do
        gen "orient$o.jpg" sh -c "jpegtran -perfect ${transforms[$o]} $v/s444.jpg >$v/orient$o.tmp &&
            exiftool -q -q -overwrite_original -n -Orientation=$o $v/orient$o.tmp && mv $v/orient$o.tmp $v/orient$o.jpg" || ok=0
    done
    size=$(stat -c %s "$v/s420.jpg" 2>/dev/null || echo 0)
    gen truncated.jpg sh -c "head -c $((size / 2)) $v/s420.jpg >$v/truncated.jpg" || ok=0
    # three stray bytes after the 20-byte JFIF APP0 segment: libjpeg warns "3 extraneous bytes before marker"
    gen extraneous.jpg sh -c "{ head -c 20 $v/s420.jpg; printf 'xyz'; tail -c +21 $v/s420.jpg; } >$v/extraneous.jpg" || ok=0
    gen garbage.jpg sh -c "yes 'this is not an image' | head -c 3000 >$v/garbage.jpg" || ok=0
    gen corrupt_header.jpg sh -c "{ head -c 20 $v/s420.jpg; yes 'garbage' | head -c 2000; } >$v/corrupt_header.jpg" || ok=0
    [[ -e $v/empty.jpg ]] || : >"$v/empty.jpg"
    gen huge_header.jpg patch_sof "$v/s420.jpg" "$v/huge_header.jpg" 5 '\372\372\372\372' || ok=0    # 64250 x 64250
    gen zero_dims.jpg patch_sof "$v/s420.jpg" "$v/zero_dims.jpg" 5 '\000\000\000\000' || ok=0
    gen precision12.jpg patch_sof "$v/s420.jpg" "$v/precision12.jpg" 4 '\014' || ok=0
    ((ok)) || variant_status="variants: SKIP some variants could not be generated (see the tools' messages above)"
    [[ -s photos/fruits.jpg ]] || variant_status="$variant_status (generated from a synthetic picture: opencv-doc missing)"
fi
printf '%s\n%s\n' "$photo_status" "$variant_status" | tee STATUS
