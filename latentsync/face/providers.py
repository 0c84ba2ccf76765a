"""onnxruntime execution-provider choice shared by the ONNX face backends."""
from __future__ import annotations


def onnx_providers(device: str = "cpu") -> list:
    """CUDA first (when available and the device is a CUDA one; on `cuda:N` that GPU), then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = []
    device = str(device)
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        index = device.partition(":")[2]
        providers.append(("CUDAExecutionProvider", {"device_id": int(index)}) if index else "CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def onnx_session_options():
    """onnxruntime session options for a detector that shares the CPU with the model: its thread pool sleeps between
    calls instead of spinning (onnxruntime's default spin-wait takes CPU time from the U-Net and VAE running beside
    it in the overlapped pipeline). The numbers it computes are the same."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def describe_providers(device: str = "cpu") -> str:
    """Where onnxruntime's face detector runs, in words for the log (and what to install for the GPU)."""
    providers = onnx_providers(device)
    if "CUDAExecutionProvider" in str(providers[0]):
        return "face detection on the GPU (onnxruntime's CUDA provider)"
    if str(device).startswith("cuda"):
        return ("face detection on the CPU: onnxruntime has no CUDA provider here (pip install onnxruntime-gpu "
                "to run it on the GPU)")
    return "face detection on the CPU (onnxruntime)"
