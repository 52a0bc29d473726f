"""Dataset constants: the one home of depth scales, focal lengths, native sizes and crops."""

from __future__ import annotations

# Depth PNG encodings: metres = stored uint16 value / scale; 0 marks an invalid pixel.
KITTI_DEPTH_SCALE = 256.0
NYU_DEPTH_SCALE = 1000.0

# Focal lengths in pixels at the native resolution (KITTI 2011_09_26 P_rect_02; NYU Kinect).
KITTI_FOCAL = 721.5377
NYU_FOCAL = 518.8579

# Native (height, width) of the raw frames.
KITTI_SIZE = (375, 1242)
NYU_SIZE = (480, 640)

# KB crop (KITTI benchmark): bottom KB_CROP[0] rows, centred KB_CROP[1] columns.
KB_CROP = (352, 1216)

# Caps used for training masks and evaluation (metres).
KITTI_MAX_DEPTH = 80.0
NYU_MAX_DEPTH = 10.0

# The largest value a 16-bit PNG stores.
UINT16_MAX = 65535

# Pseudo-label confidence maps (`<key>.confidence.png`): confidence = stored uint16 value / scale.
CONFIDENCE_SCALE = UINT16_MAX
