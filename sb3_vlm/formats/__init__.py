"""On-disk formats sb3-vlm reads and writes: the FTRL checkpoint layout, FTRL/APPLR trajectory files, the published
APPLR actor, SB3 zips, replay-buffer ``.npz`` files, and the restricted unpickler they rely on."""
