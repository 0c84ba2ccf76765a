"""onnxruntime execution-provider choice shared by the ONNX face backends."""
from __future__ import annotations


def onnx_providers(device: str = "cpu") -> list[str]:
    """CUDA first (when available and the device is not the CPU), then CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = []
    if str(device) != "cpu" and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers
