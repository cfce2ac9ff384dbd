"""``defr-export``'s defaults, in a module that imports nothing: the command shows them in ``--help`` and
parses its options before torch and ONNX load (seconds during which Ctrl-C must still give one line)."""

DEFAULT_OPSET = 18  # parsed by TensorRT 10 and run by ONNX Runtime >= 1.14
DEFAULT_MAX_DROP = 1.0  # mAP points int8 may lose against fp32 on the held-out images
MAX_BATCH = 8  # the engine profile's largest B
MAX_PAIRS = 1024  # the engine profile's largest P
CALIBRATION_IMAGES = 32  # calibrate on N images, gate on up to N others
CALIBRATION_SPLIT = "test"  # split of a calibration dataset that has splits
