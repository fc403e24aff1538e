"""``python -m sb3_vlm.cli`` = ``sb3-vlm``."""

from sb3_vlm.cli import main

raise SystemExit(main())
