#!/bin/sh
# Files of the chat image beside its compiled executable (sharp): docker/service.Dockerfile runs this in its
# build stage as `sh services/chat/scripts/image-files.sh /out` (from the repository root, after
# `bun install`). A `bun build --compile` executable resolves no package from disk, so the image
# code (src/modules/attachments/image.ts) imports <executable dir>/sharp/dist/sharp.mjs: sharp's
# JavaScript bundled with its dependencies, next to its native addon where sharp looks for it
# (../src/build/Release/) and libvips where the addon's RPATH points ($ORIGIN/../../sharp-libvips-linux-x64/lib).
set -eu
out=${1:?usage: image-files.sh OUT_DIR}
store=node_modules/.bun
bun build --target=bun --format=esm services/chat/node_modules/sharp/dist/index.mjs --outfile "$out/sharp/dist/sharp.mjs"
mkdir -p "$out/sharp/src/build/Release" "$out/sharp/src/sharp-libvips-linux-x64/lib"
cp "$store"/@img+sharp-linux-x64@*/node_modules/@img/sharp-linux-x64/lib/*.node "$out/sharp/src/build/Release/"
cp "$store"/@img+sharp-libvips-linux-x64@*/node_modules/@img/sharp-libvips-linux-x64/lib/libvips-cpp.so.* \
  "$out/sharp/src/sharp-libvips-linux-x64/lib/"
