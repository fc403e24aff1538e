"""rl-zoo3 hyper-parameter files of sb3-vlm, shipped as package data (``importlib.resources.files("zoo_configs")``).

The stock zoo reads them by path: ``python -m rl_zoo3.train --conf-file zoo_configs/td3_vlm_barnnav.yml ...``.
"""
