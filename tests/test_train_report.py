"""`sb3-vlm train` ends by saying how well the policy did: nav metric and success before and after training, beside
default DWA's."""

import re

from sb3_vlm.cli import main


def test_train_ends_with_a_held_out_comparison_to_default_dwa(tmp_path, capsys):
    argv = ["train", "--policy", "applr", "--timesteps", "32", "--n-envs", "4", "--log-dir", str(tmp_path),
            "--no-progress-bar", "--final-eval", "2"]  # fmt: skip
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    pattern = (
        r"held-out check on 2 generated test worlds \(same seeds\): this policy nav metric start (\d\.\d{3}) "
        r"\(success \d+%\) -> final (\d\.\d{3}) \(success \d+%\), default DWA (\d\.\d{3}) \(success \d+%\)"
    )
    match = re.fullmatch(pattern, last)
    assert match, last
    assert all(0.0 <= float(v) <= 0.5 for v in match.groups())
