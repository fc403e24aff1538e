"""The supervised stage: label search in the simulator and DPT-head training (FTRL's SFT)."""
