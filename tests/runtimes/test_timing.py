"""Round-robin timing of exported files, in a child process, without PyTorch."""
import subprocess
import sys

from qnas_deploy.runtimes import RUNTIMES
from qnas_deploy.runtimes.timing import Job, round_robin


def _jobs(files):
    onnx, tfl = files[".onnx"], files[".tflite"]
    return [Job(onnx, "onnxruntime", RUNTIMES["onnxruntime"].input_shape(8, 8)),
            Job(onnx, "onnxruntime", RUNTIMES["onnxruntime"].input_shape(96, 96)),
            Job(tfl, "litert-xnnpack", RUNTIMES["litert-xnnpack"].input_shape(16, 20)),
            Job(tfl, "litert-builtin", (12, 14), image=True)]


def test_round_robin_gives_each_job_its_own_statistics(espcn_files):
    r = round_robin(_jobs(espcn_files), threads=1, runs=5, warmup=1)
    assert len(r.timings) == 4
    for t in r.timings:
        assert 0 < t.min_ms <= t.p10_ms <= t.median_ms <= t.p90_ms
    # In the jobs' order: 144 times the pixels of the first job take longer.
    assert r.timings[1].median_ms > 2 * r.timings[0].median_ms
    assert 0 < r.base_rss_kb < r.peak_rss_kb


def test_timing_runs_in_a_child_and_needs_no_pytorch(espcn_files):
    """What a board has: the runtime and this package. The rounds run in a spawned child,
    so the parent never loads a runtime; in-process they run with PyTorch blocked."""
    code = (
        "import sys\n"
        "import qnas_deploy.runtimes, qnas_deploy.runtimes.timing, qnas_deploy.bench.latency\n"
        "assert 'torch' not in sys.modules\n"
        "from qnas_deploy.runtimes.timing import Job, round_robin\n"
        f"jobs = [Job({espcn_files['.onnx']!r}, 'onnxruntime', (1, 3, 8, 8)),\n"
        f"        Job({espcn_files['.tflite']!r}, 'litert-builtin', (8, 8), image=True)]\n"
        "r = round_robin(jobs, 1, 2, 1)\n"
        "assert len(r.timings) == 2 and all(t.median_ms > 0 for t in r.timings)\n"
        "assert not {'onnxruntime', 'ai_edge_litert', 'torch'} & set(sys.modules), 'ran in this process'\n"
        "sys.modules['torch'] = None\n"
        "assert len(round_robin(jobs, 1, 2, 1, isolate=False).timings) == 2\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
