"""``defr serve`` as a process (SIGTERM drains and stops everything it started) and a real two-node Ray
cluster on this machine (``ray.cluster_utils.Cluster``, both nodes on 127.0.0.1): replicas and batch tasks
on both nodes, served = ``--ray`` batch = in-process results, and ``--address`` removing only its own app.

Every test is ``slow`` and ``ray``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from servekit import assert_results_equal, checkpoint, free_port, image_set, scene

from defr.serve.client import DetectClient, ServeError

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return Path(checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors"))


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_serve(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "defr", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_healthy(client: DetectClient, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if client.health() == {"status": "ok"}:
                return
        except ServeError:
            pass
        time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"defr serve did not become healthy:\n{process.communicate()[0]}")


def test_sigterm_drains_and_stops_the_local_ray_it_started(model):
    port = free_port()
    args = ["--checkpoint", str(model), "--port", str(port), "--max-batch", "1"]
    client = DetectClient(f"http://127.0.0.1:{port}", timeout_s=60, retries=0)
    process = start_serve(args)
    try:
        try:
            wait_healthy(client, process)
        except AssertionError as e:  # Ray's own node-startup timeout on a loaded 2-core machine: once more
            if "timed out during startup" not in str(e):
                raise
            process = start_serve(args)
            wait_healthy(client, process)
        started = descendants(process.pid)
        assert any(b"raylet" in (Path("/proc") / str(p) / "cmdline").read_bytes() for p in started if alive(p))
        images, dets = scene(40, 48)  # 48 backend calls of one frame: in flight when the signal comes
        answer: dict = {}

        def call() -> None:
            try:
                answer["results"] = client.detect(images, dets)
            except ServeError as e:
                answer["error"] = e

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        caller.join(timeout=60)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output
    assert "draining in-flight requests" in output and "defr serve: stopped" in output
    assert len(answer.get("results", [])) == 48, answer  # the request in flight at the signal was answered
    time.sleep(1)
    assert not [p for p in started if alive(p)], "processes of defr serve outlived it"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds: past TIME_WAIT, not a listener
        s.bind(("127.0.0.1", port))  # the port is free again


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # both nodes on 127.0.0.1 (as defr.serve.connect keeps a local Ray): Ray would resolve it to eth0's address
    previous, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = previous


def test_two_nodes_replicas_and_batch_tasks_on_both_results_unchanged(cluster, model, tmp_path):
    from ray import serve

    from defr.runtime import load_detector
    from defr.runtime.io import list_images, load_detections, read_image
    from defr.serve.batch import VideoJob, detect_images_ray, run_videos_ray
    from defr.serve.deployment import APP_NAME, ServeConfig, build_app

    images_dir, dets_file = image_set(tmp_path, 8, seed=5)
    paths = list_images(images_dir)
    detections = load_detections(dets_file, [p.name for p in paths])
    images, dets = [read_image(p) for p in paths], [detections[p.name] for p in paths]
    in_process = {p.name: r.to_json() for p, r in zip(paths, load_detector(model).detect(images, dets), strict=True)}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    try:
        serve.run(build_app(ServeConfig(str(model), replicas=2, max_batch=4)), name=APP_NAME, route_prefix="/")
        handle = serve.get_deployment_handle("DefrModel", APP_NAME)
        nodes = {handle.stats.remote().result(timeout_s=30)["node_id"] for _ in range(30)}
        assert len(nodes) == 2  # one replica per node: each node has the one CPU a replica takes
        client = DetectClient(f"http://127.0.0.1:{port}", timeout_s=60)
        served = client.detect(images, dets)
        assert_results_equal(dict(zip(in_process, served, strict=True)), in_process)
    finally:
        serve.shutdown()
    # two actors of one CPU each on two one-CPU nodes: the Ray Data job runs on both
    on_ray = detect_images_ray(model, paths, detections, batch_size=2, concurrency=2, progress=False)
    assert_results_equal(on_ray, in_process)

    pytest.importorskip("av")
    from defr.data.synth import generate_synthetic_video
    from defr.video import StreamConfig

    for seed in (0, 1):
        generate_synthetic_video(tmp_path / f"clip{seed}.mp4", frames=12, fps=12, width=96, seed=seed)
    spec = f"detections:{tmp_path}/{{stem}}.detections.jsonl"
    job = VideoJob(str(model), {}, spec, {}, StreamConfig(batch=4), frames_dir=tmp_path / "frames")
    summaries = run_videos_ray([tmp_path / "clip0.mp4", tmp_path / "clip1.mp4"], job, concurrency=2, progress=False)
    assert [s["frames"] for s in summaries] == [12, 12]
    assert len({s["node_id"] for s in summaries}) == 2


def test_address_removes_only_its_own_application(cluster, model):
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Other:
        def __call__(self, request) -> str:
            return "other"

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    serve.run(Other.bind(), name="other", route_prefix="/other")
    process = start_serve(["--checkpoint", str(model), "--address", cluster.address, "--port", str(port)])
    try:
        wait_healthy(DetectClient(f"http://127.0.0.1:{port}", timeout_s=30, retries=0), process)
        assert "defr" in serve.status().applications
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0 and "keeps running" in output, output
    apps = serve.status().applications
    assert "defr" not in apps and apps["other"].status == "RUNNING"
    assert len([n for n in cluster.list_all_nodes() if n.any_processes_alive()]) == 2
    serve.shutdown()


def test_a_local_ray_is_started_even_where_another_cluster_is_advertised():
    """Without an address ``defr`` starts its own Ray, even where RAY_ADDRESS names another cluster (a
    test's cluster once did: ``defr serve`` joined it and died when it stopped)."""
    script = (
        "import ray\n"
        "from defr.serve.connect import ray_session\n"
        "with ray_session(num_cpus=1):\n"
        "    print(ray.get_runtime_context().gcs_address)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "127.0.0.1:9"}  # nothing listens on port 9
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() and run.stdout.strip() != "127.0.0.1:9", run.stdout


def test_sigterm_during_detect_ray_is_one_line_and_143(model, tmp_path):
    images, dets = image_set(tmp_path, 160, size=300)
    args = ["--checkpoint", str(model), "--images", str(images), "--detections", str(dets)]
    args += ["--out", str(tmp_path / "r.json"), "--ray", "--batch-size", "1", "--concurrency", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "defr", "detect", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        seen, deadline = b"", time.time() + 300
        os.set_blocking(process.stderr.fileno(), False)
        while b"detect (ray)" not in seen and time.time() < deadline and process.poll() is None:
            seen += process.stderr.read() or b""
            time.sleep(0.2)
        if b"timed out during startup" in seen:
            pytest.skip("Ray's node did not start on this loaded machine")
        assert b"detect (ray)" in seen, seen.decode(errors="replace")
        started = descendants(process.pid)
        time.sleep(1.0)  # the job is under way
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        os.set_blocking(process.stderr.fileno(), True)
        seen += process.stderr.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    err = seen.decode(errors="replace")
    assert process.returncode == 143, err[-3000:]
    assert err.rstrip().endswith("interrupted (SIGTERM)") and "Traceback" not in err and "SIGTERM received" not in err
    assert not (tmp_path / "r.json").exists()
    time.sleep(1)
    assert not [p for p in started if alive(p)], "processes of the job outlived it"
