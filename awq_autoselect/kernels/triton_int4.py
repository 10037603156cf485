"""AWQ weights repacked for the project's own Triton int4 kernels: a one-row matmul made for batch-1 decode.

Why: tinygemm (:mod:`.torch_int4`) reads the weights of a batch-1 decode step at about a third of the H200's
bandwidth. :mod:`.int4_gemv` has a kernel for few-row products over a layout repacked for it; this module is the
``nn.Module`` around it, the catalogue's ``gemv_triton`` version.

Dispatch. Up to ``gemv_max_rows`` rows (a decode step of that many sequences) the gemv kernel runs; from there on
the layer dequantizes its weight in one Triton kernel and calls ``F.linear`` (cuBLAS), as torch_int4's dense path
does. On a CPU (tests) the same happens in torch ops, or under Triton's interpreter when ``TRITON_INTERPRET=1``.

torch.compile and CUDA graphs. The gemv launch is a custom op (``awq_autoselect::int4_gemv``) with a fake
implementation, so a compiled decode step calls it as one opaque kernel and a CUDA graph captures it. Its launch
configuration is chosen per layer shape before any capture: by :func:`tune_layers`, which times a few
configurations on the device (once per process and shape), or the default.

The math is AWQ's ``(q - z) * s`` on fp16 scales, in float32 (:mod:`.int4_gemv`): no bf16 rounding of scales or
zeros, unlike tinygemm. Activations may be float16 or bfloat16 (float32 on a CPU).

Private module: imported by :mod:`awq_autoselect.loading` inside functions, never by ``import awq_autoselect``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from awq_autoselect.errors import ConversionError, InvalidArgumentError, VersionUnavailableError

from . import int4_gemv
from ._triton import interpreting
from .int4_gemv import GemvConfig
from .torch_int4 import _gemm_layers, _layer_geometry, _release, _unpack_gemm_module

if TYPE_CHECKING:
    from typing import Self

    from awq_autoselect.formats import UnpackedWeight

__all__ = [
    "DEFAULT_CONFIG",
    "GEMV_MAX_ROWS",
    "TritonInt4Linear",
    "convert_model_to_triton_int4",
    "tune_layers",
]

logger = logging.getLogger(__name__)

#: Rows up to which ``forward`` runs the gemv kernel; more rows dequantize and call ``F.linear``.
GEMV_MAX_ROWS = 4
#: The launch configuration used where none was tuned.
DEFAULT_CONFIG = GemvConfig(blocks=1, groups_per_step=4, num_warps=1, inner=2)
#: Configurations :func:`tune_layers` times per shape (interleave is fixed per module at packing).
CANDIDATES: tuple[GemvConfig, ...] = (
    DEFAULT_CONFIG,
    GemvConfig(1, 8, 1, 1),
    GemvConfig(2, 4, 2, 2),
    GemvConfig(1, 4, 1, 4),
)
_INTERLEAVE = 4
_COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------------------------------------------
# the custom op: what torch.compile sees


@torch.library.custom_op("awq_autoselect::int4_gemv", mutates_args=())
def _gemv_op(  # noqa: PLR0917 - a custom op's schema takes its arguments by position
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale_zero: torch.Tensor,
    group_size: int,
    blocks: int,
    groups_per_step: int,
    num_warps: int,
    inner: int,
    num_stages: int,
) -> torch.Tensor:
    config = GemvConfig(blocks, groups_per_step, num_warps, inner, num_stages)
    return int4_gemv.gemv(x, qweight, scale_zero, group_size, config=config)


@_gemv_op.register_fake
def _gemv_fake(  # noqa: PLR0917 - the op's signature
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale_zero: torch.Tensor,
    group_size: int,
    blocks: int,
    groups_per_step: int,
    num_warps: int,
    inner: int,
    num_stages: int,
) -> torch.Tensor:
    return x.new_empty((x.shape[0], qweight.shape[0] * qweight.shape[2]))


# --------------------------------------------------------------------------------------------------------------
# the module


class TritonInt4Linear(torch.nn.Module):
    """A 4-bit AWQ linear layer computed by the project's Triton gemv kernel (few rows) or dequantize + cuBLAS.

    State (what ``state_dict`` holds, device-independent): ``qweight`` int32 ``[N/4, K/8, 4]`` and
    ``scale_zero`` int32 ``[N/4, K/G, 4]`` (the gemv layout, :mod:`.int4_gemv`), and ``bias`` ``[N]`` in the
    compute dtype or ``None``.

    Args:
        in_features: inputs (K): a multiple of ``group_size``.
        out_features: outputs (N): a multiple of 4.
        group_size: a power of two of at least 32.
        bias: whether the layer has a bias.
        device: where the state lives; default CPU.
        dtype: compute dtype of inputs and outputs (float16 by default; bfloat16; float32 on a CPU).
        gemv_max_rows: rows up to which the gemv kernel runs (default :data:`GEMV_MAX_ROWS`).

    Raises:
        ConversionError: the shape or group size cannot be held by the layout.
        VersionUnavailableError: the device cannot run the kernel (not CUDA, no triton), or the dtype.
        InvalidArgumentError: ``gemv_max_rows`` below 0.
    """

    qweight: torch.Tensor
    scale_zero: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        *,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float16,
        gemv_max_rows: int | None = None,
    ) -> None:
        super().__init__()
        dev = torch.device("cpu" if device is None else device)
        if str(dev) == "cuda":
            dev = torch.device("cuda", torch.cuda.current_device())
        limit = GEMV_MAX_ROWS if gemv_max_rows is None else gemv_max_rows
        if limit < 0:
            raise InvalidArgumentError(f"gemv_max_rows must be >= 0, got {gemv_max_rows}")
        _check_platform(dev, dtype)
        int4_gemv.check_geometry(out_features, in_features, group_size, _INTERLEAVE)
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.gemv_max_rows = limit
        self.config = DEFAULT_CONFIG
        blocks, groups = out_features // _INTERLEAVE, in_features // group_size
        self.register_buffer(
            "qweight", torch.zeros((blocks, in_features // 8, _INTERLEAVE), dtype=torch.int32, device=dev)
        )
        self.register_buffer("scale_zero", torch.zeros((blocks, groups, _INTERLEAVE), dtype=torch.int32, device=dev))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=dev) if bias else None)
        self._dtype = dtype

    # --- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_unpacked(
        cls,
        weight: UnpackedWeight,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float16,
        gemv_max_rows: int | None = None,
    ) -> TritonInt4Linear:
        """Build the module from the layout-free form of :func:`awq_autoselect.formats.unpack`.

        Raises:
            ConversionError: the shape or group size cannot be held by the layout.
            VersionUnavailableError: the device cannot run the kernel.
        """
        dev = weight.intweight.device if device is None else torch.device(device)
        out_features, in_features = (int(d) for d in weight.intweight.shape)
        module = cls(
            in_features,
            out_features,
            weight.group_size,
            bias=weight.bias is not None,
            device=dev,
            dtype=dtype,
            gemv_max_rows=gemv_max_rows,
        )
        module.load_unpacked(weight)
        return module

    @torch.no_grad()
    def load_unpacked(self, weight: UnpackedWeight) -> None:
        """Repack ``weight`` into this module's state (its shape and group size must match the module's).

        Raises:
            ConversionError: the weight's shape, group size or bias differs from the module's.
        """
        n, k = (int(d) for d in weight.intweight.shape)
        if (n, k, weight.group_size) != (self.out_features, self.in_features, self.group_size):
            raise ConversionError(
                f"weight [{n}x{k}, group {weight.group_size}] does not fit this TritonInt4Linear "
                f"[{self.out_features}x{self.in_features}, group {self.group_size}]"
            )
        if (self.bias is None) != (weight.bias is None):
            raise ConversionError("bias mismatch between the weight and this TritonInt4Linear")
        dev = self.qweight.device
        qweight, scale_zero = int4_gemv.pack_gemv_layout(
            weight.intweight.to(dev),
            None if weight.zeros is None else weight.zeros.to(dev),
            weight.scales.to(dev),
            self.group_size,
            _INTERLEAVE,
        )
        self.qweight.copy_(qweight)
        self.scale_zero.copy_(scale_zero)
        if self.bias is not None and weight.bias is not None:
            self.bias.copy_(weight.bias.to(dev, self.bias.dtype))

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if self.bias is not None:
            self._dtype = self.bias.dtype
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: inputs are cast to it, outputs come back in the input's dtype."""
        return self._dtype

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense ``[out_features, in_features]`` weight ``(q - z) * s``, rounded once to ``dtype``."""
        target = dtype or self._dtype
        with torch.no_grad():
            if target in (torch.float16, torch.bfloat16) and (self.qweight.is_cuda or interpreting()):
                return int4_gemv.dequantize_triton(self.qweight, self.scale_zero, self.group_size, target)
            return int4_gemv.dequantize_gemv_layout(self.qweight, self.scale_zero, self.group_size, target)

    # --- forward -----------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias`` over the last dimension; returns ``x``'s dtype.

        Raises:
            InvalidArgumentError: ``x``'s last dimension is not ``in_features``.
        """
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise InvalidArgumentError(
                f"TritonInt4Linear expects inputs [..., {self.in_features}], got {list(x.shape)}"
            )
        out_shape = (*x.shape[:-1], self.out_features)
        rows = x.reshape(-1, self.in_features).to(self._dtype).contiguous()
        count = rows.shape[0]
        if count == 0:
            return x.new_zeros(out_shape)
        with torch.no_grad():
            if count <= self.gemv_max_rows and (rows.is_cuda or interpreting()):
                cfg = self.config
                out = _gemv_op(
                    rows,
                    self.qweight,
                    self.scale_zero,
                    self.group_size,
                    cfg.blocks,
                    cfg.groups_per_step,
                    cfg.num_warps,
                    cfg.inner,
                    cfg.num_stages,
                )
            else:
                out = F.linear(rows, self.dequantize())
            assert isinstance(out, torch.Tensor)
            if self.bias is not None:
                out = out + self.bias
        return out.reshape(out_shape).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
            f"bias={self.bias is not None}, dtype={self._dtype}, gemv_max_rows={self.gemv_max_rows}, "
            f"config={self.config}"
        )


def _check_platform(device: torch.device, dtype: torch.dtype) -> None:
    reasons: list[str] = []
    error = int4_gemv.triton_import_error()
    if device.type == "cuda":
        if error is not None:
            reasons.append(error)
        if dtype not in (torch.float16, torch.bfloat16):
            reasons.append(f"the kernel takes float16 or bfloat16 activations on CUDA, got dtype={dtype}")
    elif device.type == "cpu":
        if dtype not in _COMPUTE_DTYPES:
            reasons.append(f"on a CPU the layer computes in float16, bfloat16 or float32, got dtype={dtype}")
    else:
        reasons.append(f"device {device} has no Triton kernel here; use cuda")
    if reasons:
        raise VersionUnavailableError(
            f"gemv_triton cannot run on {device}: " + "; ".join(reasons), "gemv_triton", tuple(reasons)
        )


# --------------------------------------------------------------------------------------------------------------
# launch configurations


_TUNED: dict[tuple[str, int, int, int, int], GemvConfig] = {}


def _time_config(layer: TritonInt4Linear, rows: torch.Tensor, config: GemvConfig, calls: int) -> float:
    """Median microseconds of one gemv call with ``config`` (after a warmup that compiles it)."""
    qweight, scale_zero = layer.qweight, layer.scale_zero
    out = torch.empty((rows.shape[0], layer.out_features), dtype=rows.dtype, device=rows.device)
    int4_gemv.gemv(rows, qweight, scale_zero, layer.group_size, config=config, out=out)
    times = []
    for _ in range(3):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        for _ in range(calls):
            int4_gemv.gemv(rows, qweight, scale_zero, layer.group_size, config=config, out=out)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0 / calls)
    return float(sorted(times)[1])


def tune_layers(model: torch.nn.Module, candidates: tuple[GemvConfig, ...] = CANDIDATES) -> dict[str, str]:
    """Time ``candidates`` on each distinct CUDA layer shape of ``model`` and give every layer the fastest.

    Shapes already tuned in this process are not timed again. Must not run inside a CUDA graph capture.

    Returns:
        ``{"NxK/G": "config"}`` for every shape (tuned now or earlier).
    """
    chosen: dict[str, str] = {}
    by_shape: dict[tuple[str, int, int, int, int], list[TritonInt4Linear]] = {}
    for layer in model.modules():
        if isinstance(layer, TritonInt4Linear) and layer.qweight.is_cuda:
            key = (
                str(layer.qweight.device),
                layer.out_features,
                layer.in_features,
                layer.group_size,
                int(layer._dtype == torch.bfloat16),
            )
            by_shape.setdefault(key, []).append(layer)
    for key, layers in by_shape.items():
        config = _TUNED.get(key)
        if config is None:
            first = layers[0]
            rows = torch.randn((1, first.in_features), device=first.qweight.device, dtype=first.dtype)
            timings: dict[GemvConfig, float] = {}
            for candidate in candidates:
                try:
                    timings[candidate] = _time_config(first, rows, candidate, 20)
                except Exception as exc:  # a configuration this GPU or Triton cannot compile: not a candidate
                    logger.debug("gemv config %s failed for %s: %s", candidate, key, exc)
            config = min(timings, key=timings.__getitem__) if timings else DEFAULT_CONFIG
            _TUNED[key] = config
            logger.info(
                "gemv_triton: %s -> %s (%s)",
                key,
                config,
                ", ".join(f"{c}: {t:.2f} us" for c, t in sorted(timings.items(), key=lambda i: i[1])),
            )
        for layer in layers:
            layer.config = config
        chosen[f"{key[1]}x{key[2]}/{key[3]}"] = str(config)
    return chosen


# --------------------------------------------------------------------------------------------------------------
# whole models


def convert_model_to_triton_int4(model: torch.nn.Module, *, dtype: torch.dtype = torch.float16) -> int:
    """Replace every AutoAWQ ``WQLinear_GEMM`` in ``model`` with :class:`TritonInt4Linear`.

    Every layer is checked before any is replaced: on error the model is unchanged. The rest of the model keeps
    its dtype (AutoAWQ loads it in ``dtype`` already).

    Returns:
        The number of layers replaced.

    Raises:
        ConversionError: a layer's shape or group size cannot be held by the layout (the message names it).
        VersionUnavailableError: a layer's device or ``dtype`` cannot run the kernel.
    """
    layers = list(_gemm_layers(model))
    for _parent, name, layer in layers:
        dev, in_features, out_features, group_size = _layer_geometry(layer)
        try:
            _check_platform(dev, dtype)
            int4_gemv.check_geometry(out_features, in_features, group_size, _INTERLEAVE)
        except ConversionError as exc:
            raise ConversionError(f"{name} ({type(layer).__name__}): {exc}") from None
    for parent, name, layer in layers:
        replacement = TritonInt4Linear.from_unpacked(
            _unpack_gemm_module(layer), device=_layer_geometry(layer)[0], dtype=dtype
        )
        setattr(parent, name, replacement)
        _release(layer)
    logger.info("convert_model_to_triton_int4: %d layers repacked for the gemv kernel (%s)", len(layers), dtype)
    return len(layers)
