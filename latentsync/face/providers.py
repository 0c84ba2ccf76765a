"""onnxruntime execution-provider choice shared by the ONNX face backends."""
from __future__ import annotations


def onnx_providers(device: str = "cpu") -> list:
    """CUDA first (when available and the device is not the CPU; on `cuda:N` that GPU), then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = []
    device = str(device)
    if device != "cpu" and "CUDAExecutionProvider" in available:
        index = device.partition(":")[2]
        providers.append(("CUDAExecutionProvider", {"device_id": int(index)}) if index else "CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers
