"""The workflow stages that drive the embedded simulator (``envs``): training runs, evaluation and comparison,
trajectory collection. The one part of sb3_vlm besides the CLI and the SFT label search that imports ``envs``; the
``sb3-vlm`` subcommands only parse arguments and call these."""
