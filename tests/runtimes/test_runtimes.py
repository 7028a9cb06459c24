"""The runtimes the package depends on import and run a model (real ones, no mocks)."""
import numpy as np
from onnx import TensorProto, helper

from qnas_deploy.runtimes import litert, onnxruntime


def test_tflite_interpreter_is_available():
    assert litert.module().Interpreter.__name__ == "Interpreter"


def test_onnxruntime_runs_a_graph():
    ort = onnxruntime.module()
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    # onnx >= 1.23 writes IR version 14 by default, which onnxruntime 1.31 refuses (max 13):
    # every exporter must pin the IR version it writes.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0], [0.0, 2.0])


def test_litert_keeps_its_delegate_banner_off_stderr(espcn_files):
    """LiteRT prints `INFO: Created TensorFlow Lite XNNPACK delegate` once per process, from C++,
    where it lands inside a progress bar."""
    import subprocess
    import sys

    code = "import sys; from qnas_deploy.runtimes.litert import interpreter; interpreter(sys.argv[1]); print('ok')"
    r = subprocess.run([sys.executable, "-c", code, espcn_files[".tflite"]], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    assert "XNNPACK" not in r.stderr and r.stderr.strip() == ""
