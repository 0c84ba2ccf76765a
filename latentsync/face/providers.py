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


def describe_providers(device: str = "cpu") -> str:
    """Where onnxruntime's face detector runs, in words for the log (and what to install for the GPU)."""
    providers = onnx_providers(device)
    if "CUDAExecutionProvider" in str(providers[0]):
        return "face detection on the GPU (onnxruntime's CUDA provider)"
    if str(device).startswith("cuda"):
        return ("face detection on the CPU: onnxruntime has no CUDA provider here (pip install onnxruntime-gpu "
                "to run it on the GPU)")
    return "face detection on the CPU (onnxruntime)"
