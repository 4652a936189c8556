"""Warm-started training children (srl_assets.training.warm_start): a worker forked from the server
behaves like the cold ``python -m MODULE ARGS`` it replaces (argv, working directory, environment,
stdio, exit status, signals, fresh random state), shares the server's imports, and never outlives the
process that launched it; whatever the server cannot serve runs cold."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pytest

from resources.training import ChildProcessClient
from srl_assets.training.warm_start import WarmStarter

PROBE = textwrap.dedent("""
    import json, os, random, sys, time
    import heavy
    cmd = sys.argv[1]
    if cmd == "info":
        import torch
        print(json.dumps({"args": sys.argv[1:], "cwd": os.getcwd(), "probe": os.environ.get("PROBE"),
                          "pid": os.getpid(), "ppid": os.getppid(), "random": random.random(),
                          "torch": torch.rand(1).item()}))
        print("to stderr", file=sys.stderr)
        sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    if cmd == "sleep":
        open(sys.argv[2], "w").write(str(os.getpid()))
        print("sleeping", flush=True)
        time.sleep(60)
    if cmd == "raise":
        raise RuntimeError("the probe failed")
""")
# Imported by the server before it forks; every import appends a line to IMPORTS (and, as wandb does in
# offline mode, prints to stdout).
HEAVY = "import os\nprint('[INFO] imported heavy')\nopen(os.environ['IMPORTS'], 'a').write(f'{os.getpid()}\\n')\n"


@pytest.fixture
def probe_env(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "probe.py").write_text(PROBE)
    (tmp_path / "mods" / "heavy.py").write_text(HEAVY)
    return {**os.environ, "PYTHONPATH": str(tmp_path / "mods"), "PROBE": "x", "IMPORTS": str(tmp_path / "imports")}


@pytest.fixture
def starter(tmp_path):
    warm = WarmStarter(root=str(tmp_path), preload=["heavy"])
    yield warm
    warm.close()


def _server_pid(warm: WarmStarter) -> int:
    (proc, _), = warm.servers.values()
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:  # reaped in between
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_a_warm_worker_behaves_like_the_cold_child_and_shares_the_servers_imports(tmp_path, probe_env):
    starter = WarmStarter(root=str(tmp_path), preload=["heavy", "torch"])
    try:
        _check_warm_against_cold(tmp_path, probe_env, starter)
    finally:
        starter.close()


def _check_warm_against_cold(tmp_path, probe_env, starter):
    cold_cmd = [sys.executable, "-m", "probe", "info", "3"]
    warm_cmd = starter.command(cold_cmd, probe_env)
    assert warm_cmd != cold_cmd and "--socket" in warm_cmd
    server = _server_pid(starter)
    results = {}
    for name, cmd in (("cold", cold_cmd), ("warm", warm_cmd), ("warm2", warm_cmd)):
        done = subprocess.run(cmd, env={**probe_env, "DAGSTER_PIPES_CONTEXT": name}, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=60)
        results[name] = (done.returncode, json.loads(done.stdout.splitlines()[-1]), done.stderr)
    cold, warm, warm2 = results["cold"], results["warm"], results["warm2"]
    for code, info, err in (warm, warm2):
        assert code == cold[0] == 3
        assert err == cold[2] == "to stderr\n"
        assert {k: info[k] for k in ("args", "cwd", "probe")} == {k: cold[1][k] for k in ("args", "cwd", "probe")}
        assert info["ppid"] == server  # forked by the server: really warm
    assert cold[1]["ppid"] != server
    for rng in ("random", "torch"):  # fresh random state each (Python reseeds at a fork, torch does not)
        assert len({cold[1][rng], warm[1][rng], warm2[1][rng]}) == 3, rng
    # heavy was imported twice: first by the server (started by starter.command), then by the cold child;
    # never by the two warm workers
    assert (tmp_path / "imports").read_text().split() == [str(server), str(cold[1]["pid"])]


def test_a_failing_worker_reports_its_traceback_and_exit_status(tmp_path, probe_env, starter):
    done = subprocess.run(starter.command([sys.executable, "-m", "probe", "raise"], probe_env), env=probe_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "RuntimeError: the probe failed" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_thin_process_reaches_the_worker(tmp_path, probe_env, starter, sig):
    pid_file = tmp_path / "worker.pid"
    proc = subprocess.Popen(starter.command([sys.executable, "-m", "probe", "sleep", str(pid_file)], probe_env),
                            env=probe_env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "sleeping"
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == -sig  # as Popen shows a cold child that died of it
    assert _wait_gone(int(pid_file.read_text()))


def test_a_worker_dies_with_its_thin_process_and_with_its_server(tmp_path, probe_env, starter):
    pid_file = tmp_path / "worker.pid"
    cmd = starter.command([sys.executable, "-m", "probe", "sleep", str(pid_file)], probe_env)
    proc = subprocess.Popen(cmd, env=probe_env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "sleeping"
    proc.kill()
    proc.wait(timeout=20)
    assert _wait_gone(int(pid_file.read_text())), "the worker outlived its killed thin process"

    pid_file.unlink()
    proc = subprocess.Popen(cmd, env=probe_env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "sleeping"
    server = _server_pid(starter)
    starter.close()  # what the launching process does when it exits
    assert _wait_gone(server) and _wait_gone(int(pid_file.read_text()))
    assert proc.wait(timeout=20) != 0
    assert not list(tmp_path.glob("srl-warm-*")), "the socket folder stays behind"


def test_what_the_server_cannot_serve_runs_cold(tmp_path, probe_env, starter):
    cmd = starter.command([sys.executable, "-m", "probe", "info"], probe_env)
    # another environment than the server's: refused, then run cold with the thin process's own environment
    done = subprocess.run(cmd, env={**probe_env, "PROBE": "other"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1])["probe"] == "other"
    assert "warm start refused" in done.stderr and json.loads(done.stdout.splitlines()[-1])["ppid"] != _server_pid(starter)
    # no server at all
    starter.close()
    done = subprocess.run(cmd, env=probe_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1])["probe"] == "x"
    assert "warm start unavailable" in done.stderr


def test_a_long_working_folder_keeps_the_socket_path_short(tmp_path, probe_env):
    root = tmp_path / ("x" * 120)  # pytest-xdist's tmp_path plus a long test name came to over 107 bytes
    root.mkdir()
    starter = WarmStarter(root=str(root), preload=["heavy"])
    try:
        cmd = starter.command([sys.executable, "-m", "probe", "info"], probe_env)
        assert starter.servers and not starter.failed
        done = subprocess.run(cmd, env=probe_env, capture_output=True, text=True, timeout=60)
        assert json.loads(done.stdout.splitlines()[-1])["ppid"] == _server_pid(starter)
    finally:
        starter.close()


def test_only_python_module_commands_are_warm_started(probe_env, starter):
    for cmd in ([sys.executable, "-c", "print(1)"], ["accelerate", "launch", "-m", "x"], [sys.executable, "-m"],
                f"{sys.executable} -m probe info"):
        assert starter.command(cmd, probe_env) == cmd
    assert not starter.servers


def test_the_pipes_client_runs_a_warm_child_and_reads_its_materialization(tmp_path, probe_env, starter,
                                                                         monkeypatch):
    (tmp_path / "mods" / "pipes_probe.py").write_text(textwrap.dedent("""
        import os
        from dagster_pipes import open_dagster_pipes
        with open_dagster_pipes() as pipes:
            pipes.log.info("hello from the worker")
            pipes.report_asset_materialization(metadata={"ppid": os.getppid(), "job": pipes.extras["job"]})
    """))
    inherit = ("PATH", "HOME", "PYTHONPATH", "PROBE", "IMPORTS")
    client = ChildProcessClient(inherit=inherit, warm_start=starter)

    @dg.asset
    def warm_child(context: dg.AssetExecutionContext, client: ChildProcessClient):
        return client.run(context=context, command=[sys.executable, "-m", "pipes_probe"],
                          extras={"job": "j1"}).get_materialize_result()

    for name in ("PYTHONPATH", "PROBE", "IMPORTS"):
        monkeypatch.setenv(name, probe_env[name])
    with dg.instance_for_test() as instance:
        result = dg.materialize([warm_child], instance=instance, resources={"client": client})
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["job"].value == "j1"
    assert meta["ppid"].value == _server_pid(starter)


def test_the_training_stack_preloads_in_a_training_childs_environment(tmp_path):
    """The real server (torch, transformers, TRL and the stages imported) starts in the environment
    run_child gives a training child, and serves the child's own entry point."""
    env = {**{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline",
           "WANDB_PROJECT": "srl-platform", "WANDB_DIR": str(tmp_path / "wandb")}
    starter = WarmStarter(root=str(tmp_path))
    try:
        cmd = starter.command([sys.executable, "-m", "srl_assets.training.child", "--help"], env)
        assert starter.servers and not starter.failed, "the training stack's server did not start"
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    finally:
        starter.close()
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--spec" in done.stdout
    assert "cold" not in done.stderr


def test_a_server_whose_imports_start_a_thread_refuses_and_children_run_cold(tmp_path, probe_env):
    (tmp_path / "mods" / "threaded.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n")
    starter = WarmStarter(root=str(tmp_path), preload=["threaded"])
    try:
        cmd = [sys.executable, "-m", "probe", "info"]
        assert starter.command(cmd, probe_env) == cmd  # a fork would copy the other thread's locks
        assert starter.failed and not starter.servers
    finally:
        starter.close()


def test_a_server_stops_and_cleans_up_when_its_launcher_is_killed(tmp_path, probe_env):
    launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from srl_assets.training.warm_start import WarmStarter
        warm = WarmStarter(root={str(tmp_path)!r}, preload=["heavy"])
        warm.command([sys.executable, "-m", "probe", "info"], {probe_env!r})
        (proc, path), = warm.servers.values()
        print(proc.pid, path, flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    server, path = launcher.stdout.readline().split()
    launcher.kill()  # no atexit: the server notices on its own
    launcher.wait(timeout=20)
    assert _wait_gone(int(server))
    assert not os.path.exists(os.path.dirname(path)), "the socket folder stays behind"


def test_srl_warm_start_takes_0_or_1_and_names_itself_otherwise(monkeypatch):
    from srl_assets import settings

    monkeypatch.delenv("SRL_WARM_START", raising=False)
    assert settings.warm_start() is True
    monkeypatch.setenv("SRL_WARM_START", "0")
    assert settings.warm_start() is False
    monkeypatch.setenv("SRL_WARM_START", "yes")
    with pytest.raises(ValueError, match="SRL_WARM_START must be 0 or 1, got 'yes'"):
        settings.warm_start()
