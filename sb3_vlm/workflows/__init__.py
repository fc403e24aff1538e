"""The workflow stages that drive the embedded simulator (``envs``): training runs, evaluation and comparison,
trajectory collection, learning from a buffer, ablations. Most import the simulator at module level (``import
sb3_vlm`` loads none of them); the ``sb3-vlm`` subcommands only parse arguments and call these."""
