"""Chaos: one learn-from-buffer training run whose processes are SIGKILLed at random moments, nothing lost.

The pieces users combine, as separate processes on 127.0.0.1: the learner (``sb3-vlm learn-from-buffer``, tiny VLM
TD3), the inference server (``sb3-vlm serve --mode actor`` on the learner's published policy, with ``--judge``: the
collectors' VLM judge reward), and ``--collectors`` collectors (``sb3-vlm collect --follow-signal``). A seeded
schedule SIGKILLs ``--kills`` of them, each restarted the way docs/guide/robustness.md tells users: the learner with
``--resume <run>``, the server and the collectors by running the same command again. Among the kills: a collector in
the middle of writing a trajectory file (its temporary pickle exists) and the learner in the middle of a policy
publication (its temporary policy directory exists).

Every transition has an id ``(collector, episode n, step)``: the collectors' ledgers (``actor_<id>/episodes.log``)
against the episodes the learner's final checkpoint holds in its replay buffer (``state.json`` ``consumed``) give
``lost`` (logged, neither in the buffer nor still on disk) and ``duplicated`` (in the buffer more than once), in
transitions. The final model is evaluated with ``sb3-vlm eval <run>``.

Then, where Ray is installed, ``--ray-kills`` of the kills go to the Ray async learner (``sb3-vlm train
--ray-address local --collectors 2``, APPLR's MLP): its collector actors are SIGKILLed (Ray restarts them); the run
must end with its step count and a model that evaluates. Transition ids are not tracked there: a killed actor's
unfinished chunk is never returned (dropped), and nothing returned is added twice (``sb3_vlm.distributed``).
Prints one JSON line.

    python benchmarks/chaos.py [--quick] [--kills 24 --ray-kills 4] [--steps 600] [--seed 0] [--no-judge] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_vlm.zoo import default_conf

CLI = [sys.executable, "-m", "sb3_vlm.cli"]
LOG_LINE = re.compile(r"^traj_(\d+)\.pickle (\d+)$", re.MULTILINE)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(condition: Any, timeout: float, poll: float = 0.05) -> float | None:
    """Seconds until ``condition()`` holds, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(poll)
    return None


class Chaos:
    """One run: the processes, the kill schedule, the accounting (see the module docstring)."""

    def __init__(self, out: Path, steps: int, kills: int, seed: int, collectors: int, judge: bool) -> None:
        self.out, self.steps, self.n_kills, self.judge = out, steps, kills, judge
        self.rng = np.random.default_rng(seed)
        self.buffer, self.runs, self.logs = out / "buffer", out / "runs", out / "logs"
        for d in (self.buffer, self.runs, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, list[str]] = {}
        self.restarts: Counter = Counter()
        self.events: list[dict[str, Any]] = []
        self.conf = self._zoo_conf()
        for i in range(collectors):
            self.argv[f"collector_{i}"] = self._collect_argv(i)
        self.argv["server"] = ["serve", "--checkpoint", str(self.buffer / "policy"), "--mode", "actor"]
        self.argv["server"] += ["--port", str(self.port), "--log-level", "warning", "--batch-delay-ms", "1"]
        if judge:
            self.argv["server"] += ["--judge", "--judge-name", "judge"]

    def _zoo_conf(self) -> Path:
        conf = yaml.safe_load(default_conf("vlm").read_text())
        entry = conf["BarnNavCostmap-v0"]
        entry.update(n_timesteps=self.steps, learning_starts=16, batch_size=8, train_freq=16, gradient_steps=2)
        entry.update(buffer_size=self.steps + 200, n_steps=1)
        entry["policy_kwargs"] = "dict(backbone='tiny', freeze_vlm=True, feature_cache_bytes=2**22)"
        path = self.out / "chaos_vlm.yml"
        path.write_text(yaml.safe_dump(conf))
        return path

    def _collect_argv(self, i: int) -> list[str]:
        argv = ["collect", "--server", self.url, "--buffer", str(self.buffer), "--actor-id", str(i), "--seed", str(i)]
        argv += ["--episodes", "100000", "--max-steps", "6", "--follow-signal", "--no-progress-bar"]
        argv += ["--wait-server", "120", "--timeout", "10", "--retries", "0"]
        if self.judge:
            argv += ["--judge-url", f"{self.url}/v1", "--judge-model", "judge", "--judge-frames", "2"]
            argv += ["--judge-image-size", "28x42", "--judge-timeout", "10", "--judge-retries", "0"]
        return argv

    # ------------------------------------------------------------------------------------------ processes

    def run_dir(self) -> Path | None:
        found = sorted(self.runs.glob("BarnNavCostmap-v0__*"))
        return found[0] if found else None

    def start(self, name: str) -> None:
        if name == "learner":
            run = self.run_dir()
            argv = ["learn-from-buffer", "--resume", str(run)] if run is not None else self._learner_argv()
        else:
            argv = self.argv[name]
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen([*CLI, *argv], env=ENV, stdout=log, stderr=subprocess.STDOUT)

    def _learner_argv(self) -> list[str]:
        argv = ["learn-from-buffer", "--buffer", str(self.buffer), "--servers", self.url, "--conf-file", str(self.conf)]
        return argv + ["--log-dir", str(self.runs), "--poll-interval", "0.2", "--min-age", "0", "--test-every", "0"]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def checkpoint_steps(self) -> int:
        run = self.run_dir()
        state = None if run is None else run / "checkpoints" / "last" / "state.json"
        try:
            return json.loads(state.read_text())["num_timesteps"] if state is not None else -1
        except (OSError, ValueError):
            return -1

    def logged(self, i: int) -> int:
        log = self.buffer / f"actor_{i}" / "episodes.log"
        return len(LOG_LINE.findall(log.read_text())) if log.is_file() else 0

    # ------------------------------------------------------------------------------------------- kills

    def _schedule(self) -> list[tuple[str, str]]:
        """``(target, moment)`` per kill: every target in turn at random, one mid-write and one mid-publication."""
        targets = ["learner", "server", *[n for n in self.argv if n.startswith("collector_")]]
        plan = [(str(t), "random") for t in self.rng.choice(targets, size=self.n_kills)]
        if self.n_kills >= 2:
            plan[0] = ("collector_0", "mid_write")
            plan[1] = ("learner", "mid_publication")
            order = self.rng.permutation(self.n_kills)
            plan = [plan[k] for k in order]
        return plan

    def _moment_reached(self, target: str, moment: str) -> bool:
        if moment == "mid_write":
            return any((self.buffer / f"actor_{_actor(target)}").glob("traj_*.pickle.*.tmp"))
        if moment == "mid_publication":
            return any(self.buffer.glob(".policy.tmp-*"))
        return True

    def in_flight(self, target: str) -> int:
        """Transitions not yet safe at the kill: a collector's unsaved steps, the learner's uncheckpointed ones."""
        if target.startswith("collector_"):
            actor = self.buffer / f"actor_{_actor(target)}"
            log = actor / "episodes.log"
            since = log.stat().st_mtime if log.is_file() else 0.0
            return max(sum(1 for f in actor.glob("FTRL_*.png") if f.stat().st_mtime > since) - 1, 0)
        if target == "learner":
            steps = self.ledger()
            return sum(steps.get(_held_id(p), 0) for p in self.buffer.glob("actor_*/traj_*.pickle.consumed"))
        return 0

    def kill(self, target: str, moment: str) -> dict[str, Any]:
        """SIGKILL ``target`` at ``moment`` (waiting for a file write or a publication to be under way), restart it;
        the event, whose ``recovery_s`` :meth:`recovered` fills in later."""
        caught = wait(lambda: self._moment_reached(target, moment), 120, poll=0.001) is not None
        event = {"target": target, "moment": moment if caught else f"{moment} (not caught: random)"}
        event["in_flight"] = self.in_flight(target)
        event["progress"] = (
            self.checkpoint_steps() if target == "learner" else self.logged(_actor(target)) if "_" in target else 0
        )
        event["killed_at"] = time.monotonic()
        self.procs[target].send_signal(signal.SIGKILL)
        self.procs[target].wait()
        self.start(target)
        self.restarts[target] += 1
        event["recovery_s"] = None
        print(f"killed {target} at {moment} (caught: {caught}), {event['in_flight']} transitions in flight", flush=True)
        return event

    def recovered(self, event: dict[str, Any]) -> bool:
        """Whether the restarted process works again: the server answers, the learner wrote a newer checkpoint (or
        finished), the collector committed a new episode."""
        target = event["target"]
        if target == "server":
            return self.healthy()
        if target == "learner":
            return self.checkpoint_steps() > event["progress"] or self.procs["learner"].poll() == 0
        return self.logged(_actor(target)) > event["progress"]

    # ------------------------------------------------------------------------------------------- the run

    def run(self, timeout: float) -> dict[str, Any]:
        """Start everything, kill on schedule until the learner ends; the accounting (always stops every process)."""
        try:
            return self._run(timeout)
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def _run(self, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        self.start("learner")
        assert wait(lambda: (self.buffer / "policy").is_dir(), 300), "the learner published no policy"
        self.start("server")
        assert wait(self.healthy, 300), "the server did not start"
        for name in self.argv:
            if name.startswith("collector_"):
                self.start(name)
        plan = self._schedule()
        # kill k once the learner's checkpoint holds (k + 1) / (kills + 2) of the steps: all kills before the end
        thresholds = [self.steps * (k + 1) // (len(plan) + 2) for k in range(len(plan))]
        pending: list[dict[str, Any]] = []
        while self.procs["learner"].poll() is None or self.procs["learner"].returncode != 0:
            assert time.monotonic() - started < timeout, f"no end after {timeout} s: {self.events}"
            if self.procs["learner"].poll() is not None:  # died on its own: a bug, shown in its log
                raise RuntimeError(f"the learner exited with {self.procs['learner'].returncode}; see {self.logs}")
            for event in [e for e in pending if self.recovered(e)]:
                event["recovery_s"] = round(time.monotonic() - event.pop("killed_at"), 2)
                pending.remove(event)
            busy = {e["target"] for e in pending}
            if plan and thresholds[len(self.events)] <= self.checkpoint_steps() and plan[0][0] not in busy:
                target, moment = plan.pop(0)
                event = self.kill(target, moment)
                self.events.append(event)
                pending.append(event)
            time.sleep(0.05)
        for event in pending:  # the run ended first: recovered as far as the run needed it
            event["recovery_s"] = round(time.monotonic() - event.pop("killed_at"), 2)
        for name, proc in self.procs.items():
            if name != "learner":
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=60)
        report = self.account()
        report.update(wall_s=round(time.monotonic() - started, 1))
        return report

    def ledger(self) -> dict[tuple[int, int], int]:
        """``(actor, n) -> steps`` of every episode the collectors committed."""
        steps = {}
        for log in self.buffer.glob("actor_*/episodes.log"):
            actor = int(log.parent.name.split("_")[1])
            steps.update({(actor, int(n)): int(s) for n, s in LOG_LINE.findall(log.read_text())})
        return steps

    def account(self) -> dict[str, Any]:
        run = self.run_dir()
        assert run is not None
        last = run / "checkpoints" / "last"
        state = json.loads((last / "state.json").read_text())
        with np.load(last / "replay_buffer.npz") as data:
            rows = len(data["rewards"])
        logged = self.ledger()
        in_buffer = Counter((a, n) for a, n, _ in state["consumed"])
        buffer_steps = {(a, n): s for a, n, s in state["consumed"]}
        on_disk = {_held_id(p) for p in self.buffer.glob("actor_*/traj_*.pickle*") if ".tmp" not in p.name}
        lost = sum(s for e, s in logged.items() if e not in in_buffer and e not in on_disk)
        duplicated = sum(buffer_steps[e] * (k - 1) for e, k in in_buffer.items() if k > 1)
        mismatched = sum(1 for e, s in buffer_steps.items() if e in logged and logged[e] != s)
        unlogged = sum(s for e, s in buffer_steps.items() if e not in logged)
        evaluated = subprocess.run(
            [*CLI, "eval", str(run), "--worlds", "0,1", "--runs", "1", "--json"],
            env=ENV,
            capture_output=True,
            text=True,
        )
        recoveries = [e["recovery_s"] for e in self.events]
        return {
            "lost": lost,
            "duplicated": duplicated,
            "unlogged": unlogged,
            "step_count_mismatches": mismatched,
            "steps": state["num_timesteps"],
            "requested_steps": self.steps,
            "buffer_rows": rows,
            "episodes_in_buffer": len(in_buffer),
            "episodes_logged": len(logged),
            "episodes_on_disk_unconsumed": len(on_disk - set(in_buffer)),
            "kills": len(self.events),
            "kills_by_target": dict(Counter(e["target"] for e in self.events)),
            "kill_moments": dict(Counter(e["moment"] for e in self.events)),
            "restarts": dict(self.restarts),
            "max_recovery_s": _max_or_none(recoveries),
            "recovery_s_by_target": _by_target(self.events, "recovery_s"),
            "in_flight_by_target": _by_target(self.events, "in_flight"),
            "final_model_eval": _eval_summary(evaluated),
            "judge": self.judge,
            "ray": {"skipped": "--ray-kills 0"},
        }


def _actor(target: str) -> int:
    return int(target.split("_")[1])


def _held_id(path: Path) -> tuple[int, int]:
    return int(path.parent.name.split("_")[1]), int(path.name.split("_")[1].split(".")[0])


def _max_or_none(values: list[float | None]) -> float | None:
    """The largest recovery time, None if any process did not recover."""
    return None if None in values else max(values, default=0.0)


def _eval_summary(evaluated: subprocess.CompletedProcess) -> dict[str, Any] | str:
    """``sb3-vlm eval --json``'s episodes, success rate and nav metric, or its error."""
    if evaluated.returncode != 0:
        return evaluated.stderr.strip().splitlines()[-1]
    stats = json.loads(evaluated.stdout)
    return {k: stats[k] for k in ("episodes", "success_rate", "nav_metric")}


def _by_target(events: list[dict[str, Any]], key: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for event in events:
        out.setdefault(event["target"], []).append(event[key])
    return out


def _descendants(root: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every process below ``root``."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            try:
                found.append((pid, (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                continue
            todo.append(pid)
    return found


def ray_phase(out: Path, kills: int, steps: int, rng: np.random.Generator) -> dict[str, Any]:
    """The Ray async learner (``sb3-vlm train --ray-address local --collectors 2``, APPLR's MLP on the laser) while
    ``kills`` of its collector actors are SIGKILLed at random moments (Ray restarts them; the learner counts it)."""
    try:
        import ray  # noqa: F401 - only whether the extra is installed
    except ImportError:
        return {"skipped": "ray is not installed (pip install 'sb3-vlm[ray]')"}
    conf = yaml.safe_load(default_conf("applr").read_text())
    conf["BarnNav-v0"].update(learning_starts=64, batch_size=32, policy_kwargs="dict(net_arch=[32, 32])")
    conf["BarnNav-v0"]["env_kwargs"]["max_steps"] = 20
    path = out / "chaos_applr.yml"
    path.write_text(yaml.safe_dump(conf))
    argv = ["train", "--conf-file", str(path), "--ray-address", "local", "--collectors", "2", "--n-envs", "2"]
    argv += ["--timesteps", str(steps), "--log-dir", str(out / "ray_runs"), "--final-eval", "0", "--eval-freq", "0"]
    log = open(out / "logs" / "ray_train.log", "w")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([*CLI, *argv, "--no-progress-bar"], env=ENV, stdout=log, stderr=subprocess.STDOUT)
    actors = lambda: [pid for pid, cmd in _descendants(proc.pid) if cmd.startswith("ray::Collector")]  # noqa: E731
    recoveries = []
    try:
        for _ in range(kills):
            if wait(lambda: len(actors()) >= 2 or proc.poll() is not None, 300) is None or proc.poll() is not None:
                break
            time.sleep(float(rng.uniform(1.0, 4.0)))
            before = set(actors())
            if not before:
                break
            os.kill(int(rng.choice(sorted(before))), signal.SIGKILL)
            back = wait(lambda old=before: bool(set(actors()) - old) or proc.poll() is not None, 300)
            recoveries.append(None if back is None else round(back, 2))
        code = proc.wait(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = next((out / "ray_runs").glob("*__ray"), None)
    result: dict[str, Any] = {
        "kills": len(recoveries),
        "recovery_s": recoveries,
        "exit": code,
        "requested_steps": steps,
    }
    if run is not None and (run / "model.zip").is_file():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(next((run / "tb").iterdir())))
        events.Reload()
        result["collector_restarts"] = int(events.Scalars("distributed/collector_restarts")[-1].value)
        result["steps"] = int(events.Scalars("distributed/collector_restarts")[-1].step)
        evaluated = subprocess.run(
            [*CLI, "eval", str(run), "--worlds", "0,1", "--runs", "1", "--json"],
            env=ENV,
            capture_output=True,
            text=True,
        )
        result["final_model_eval"] = _eval_summary(evaluated)
    result["transition_ids"] = "not tracked: a killed actor's unreturned chunk is dropped, by Ray's design"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 4 kills, 64 steps")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=600, help="transitions the learner trains on")
    parser.add_argument("--collectors", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-judge", action="store_true", help="collectors without the VLM judge reward")
    parser.add_argument(
        "--ray-kills", type=int, default=4, help="of --kills, how many hit the Ray async learner's collector actors"
    )
    parser.add_argument("--ray-steps", type=int, default=3000, help="env steps of the Ray run")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, help="work directory (default: a temporary one, deleted)")
    args = parser.parse_args(argv)
    if args.quick:
        args.kills, args.steps, args.ray_kills = 4, 64, 0
    out = args.out or Path(tempfile.mkdtemp(prefix="sb3_vlm_chaos_"))
    try:
        ray_kills = min(args.ray_kills, args.kills)
        chaos = Chaos(out, args.steps, args.kills - ray_kills, args.seed, args.collectors, not args.no_judge)
        report = chaos.run(args.timeout)
        if ray_kills:
            report["ray"] = ray_phase(out, ray_kills, args.ray_steps, chaos.rng)
            report["kills"] += report["ray"].get("kills", 0)
            report["kills_by_target"]["ray_collector"] = report["ray"].get("kills", 0)
            report["max_recovery_s"] = _max_or_none([report["max_recovery_s"], *report["ray"].get("recovery_s", [])])
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
