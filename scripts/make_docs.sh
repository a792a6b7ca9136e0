#!/usr/bin/env bash
# Regenerate the README pictures under docs/ with poolcli itself.
set -euo pipefail
cd "$(dirname "$0")/.."
d=docs
# Unpooling: max pool 4x4 with a saved map, then unpool at the original size.
poolcli pool --op max -k 4 --save-indices sample_images/chelsea.png -o $d/chelsea_max.png --force -q
poolcli unpool $d/chelsea_max.png --indices $d/chelsea_max.indices.npz -o $d/chelsea_unpool.png --force -q
rm -f $d/chelsea_max.indices.npz
# Contrast normalization: a dark and a bright version of one photo look alike after instance norm.
python - <<'PY'
import numpy as np
from poolcli import imageio
x = imageio.read_image("sample_images/coffee.png").array[::2, ::2].astype(np.float64)
imageio.write_image("docs/coffee_dark.png", (x * 0.25).round().astype(np.uint8), overwrite=True)
imageio.write_image("docs/coffee_bright.png", (150 + x * 0.4).round().astype(np.uint8), overwrite=True)
PY
poolcli norm --op instance $d/coffee_dark.png $d/coffee_bright.png -o $d --force -q
# Gallery: every pooling operator side by side.
poolcli compare sample_images/chelsea.png \
  --ops max,avg,min,lp,stochastic,sort,mixed,softpool,gem,lse,blur,gap,gmp,adaptive-avg,adaptive-max,kmax \
  -k 4 --seed 0 --tile-size 320 --cols 4 \
  --title "poolcli compare: every pooling operator on chelsea.png, 4x4 windows" -o $d/gallery.png --force
