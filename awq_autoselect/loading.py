"""``load_quantized_auto()``: load an AWQ checkpoint with a kernel that is proven to work on this machine.

AutoAWQ's ``from_quantized(path, version=...)`` ignores ``version``: the checkpoint's layout alone decides, and a
kernel that cannot run here fails late (a missing extension at the first forward, "no kernel image" at the first
forward, fused layers without flash-attn with a ``NameError``) or not at all (garbage for unsupported group
sizes). So this module:

1. validates the checkpoint (:func:`awq_autoselect.checkpoint.read_checkpoint`) and selects an ordered chain of
   kernels (:func:`awq_autoselect.selection.select_awq_version`);
2. for each kernel, runs AutoAWQ's real ``from_quantized`` with three narrow hooks in ``awq.models.base`` —
   the quantization config (so the module class matches the kernel), the weight loader (which converts the
   packed layout in memory, see :mod:`awq_autoselect.conversion`) and the device probe (so a CPU load is not
   forced onto IPEX) — then swaps in the kernel's module class where AutoAWQ has none;
3. probes the result: a short prefill and a one-token forward on the target device, with a few quantized
   layers compared against weights dequantized in torch straight from the checkpoint;
4. on failure records the attempt, releases memory and tries the next kernel; a poisoned CUDA context stops
   the walk with :class:`~awq_autoselect.errors.CudaContextPoisonedError`.

The user's files are only read. The hooks are applied under a process-wide lock and removed afterwards.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from .catalogue import CATALOGUE, Kernel, Layout, parse_kernel
from .checkpoint import CheckpointInfo, QuantizedLayer, read_checkpoint
from .conversion import QUANTIZED_SUFFIXES, iter_tensors
from .errors import (
    AwqAutoselectError,
    ConversionError,
    CorruptCheckpointError,
    CudaContextPoisonedError,
    FallbackWarning,
    InvalidDeviceSpecError,
    KernelFailedError,
    VersionUnavailableError,
)

if TYPE_CHECKING:
    import torch

    from .environment import Environment
    from .selection import Selection, Workload

__all__ = [
    "DEFAULT_PROBE_TOLERANCE",
    "Attempt",
    "LayerCheck",
    "LoadReport",
    "LoadResult",
    "ProbeResult",
    "load_dense_baseline",
    "load_quantized_auto",
]


def __dir__() -> list[str]:
    return __all__


logger = logging.getLogger(__name__)

# Relative Frobenius error ||out - ref|| / ||ref|| allowed per probed layer. fp16 kernels land near 1e-3 and
# bf16 torch_int4 near 5e-3 (docs/torch-int4.md); garbage (uninitialised output, wrong layout) is O(1) or NaN.
DEFAULT_PROBE_TOLERANCE = 0.02
_PROBE_PROMPT_TOKENS = 16
_PROBE_LAYERS = 3

# Exception types a kernel raises when it cannot run here (AutoAWQ research notes, section 1.8): a missing
# extension (ImportError / ModuleNotFoundError / AttributeError on a None module), no kernel image
# (RuntimeError), fused layers without flash-attn (NameError), kernel argument checks (AssertionError,
# ValueError, NotImplementedError), Triton on CPU tensors (TypeError).
_KERNEL_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ImportError,
    NameError,
    AssertionError,
    ValueError,
    NotImplementedError,
    AttributeError,
    TypeError,
    KeyError,
)


class _ProbeMismatchError(RuntimeError):
    """The model loaded but a probed layer's output does not match its reference."""


_RETRYABLE: tuple[type[BaseException], ...] = (*_KERNEL_ERRORS, _ProbeMismatchError)

_HOOK_LOCK = threading.RLock()


@dataclass(frozen=True)
class Attempt:
    """One step of the fallback walk."""

    kernel: Kernel
    fused: bool
    stage: str  # "skipped" (rejected before loading), "load", "probe", or "ok"
    ok: bool
    error_type: str | None = None
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "kernel": self.kernel.value,
            "fused": self.fused,
            "stage": self.stage,
            "ok": self.ok,
            "error_type": self.error_type,
            "message": self.message,
            "seconds": round(self.seconds, 4),
        }

    def __str__(self) -> str:
        fused = " (fused)" if self.fused else ""
        if self.ok:
            return f"{self.kernel}{fused}: ok ({self.seconds:.2f} s)"
        if self.stage == "skipped":
            return f"{self.kernel}{fused}: not tried: {self.message}"
        error = f"{self.error_type}: " if self.error_type else ""
        return f"{self.kernel}{fused}: failed at {self.stage}: {error}{self.message}"


@dataclass(frozen=True)
class LayerCheck:
    """One quantized layer's output compared with ``x @ dequantize(W).T + b`` computed in float32."""

    name: str
    rows: int
    rel_error: float
    max_abs_error: float
    finite: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rows": self.rows,
            "rel_error": _json_float(self.rel_error),
            "max_abs_error": _json_float(self.max_abs_error),
            "finite": self.finite,
        }


@dataclass(frozen=True)
class ProbeResult:
    """The numeric check run after loading."""

    ok: bool
    tolerance: float
    checks: tuple[LayerCheck, ...]
    logits_finite: bool
    message: str

    @property
    def max_rel_error(self) -> float:
        return max((c.rel_error for c in self.checks), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "tolerance": self.tolerance,
            "max_rel_error": _json_float(self.max_rel_error),
            "logits_finite": self.logits_finite,
            "message": self.message,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_quantized_auto` did: the request, the result, every attempt and conversion."""

    path: str
    requested: str
    kernel: Kernel | None
    device: str
    dtype: str
    fused: bool
    checkpoint_layout: Layout
    loaded_layout: Layout | None
    conversions: tuple[str, ...]
    attempts: tuple[Attempt, ...]
    probe: ProbeResult | None
    selection: Selection | None = field(default=None, compare=False)
    seconds: float = 0.0

    @property
    def fell_back(self) -> bool:
        """True when the kernel used is not the first one tried or requested."""
        return any(not a.ok for a in self.attempts)

    def to_dict(self) -> dict[str, object]:
        return {
            "schema": "awq-autoselect.load/1",
            "path": self.path,
            "requested": self.requested,
            "kernel": self.kernel.value if self.kernel else None,
            "device": self.device,
            "dtype": self.dtype,
            "fused": self.fused,
            "checkpoint_layout": self.checkpoint_layout.value,
            "loaded_layout": self.loaded_layout.value if self.loaded_layout else None,
            "conversions": list(self.conversions),
            "fell_back": self.fell_back,
            "attempts": [a.to_dict() for a in self.attempts],
            "probe": self.probe.to_dict() if self.probe else None,
            "selection": self.selection.to_dict() if self.selection else None,
            "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        lines = [
            f"checkpoint: {self.path} ({self.checkpoint_layout.value} layout)",
            f"requested:  {self.requested}",
            f"loaded:     {self.kernel.value if self.kernel else '-'} on {self.device} ({self.dtype}"
            f"{', fused layers' if self.fused else ''}) in {self.seconds:.1f} s",
        ]
        lines += [f"conversion: {c}" for c in self.conversions]
        lines.append("attempts:")
        lines += [f"  - {a}" for a in self.attempts]
        if self.probe is not None:
            lines.append(f"probe:      {'ok' if self.probe.ok else 'FAILED'}: {self.probe.message}")
        return "\n".join(lines)


class LoadResult(NamedTuple):
    """``model, report = load_quantized_auto(path)``. ``model`` is AutoAWQ's model wrapper (``.generate()``,
    ``.model`` is the Hugging Face model)."""

    model: torch.nn.Module
    report: LoadReport


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


# --------------------------------------------------------------------------------------------------------------
# devices and dtypes


def _resolve_device(device: str | torch.device | None) -> torch.device:
    import torch

    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidDeviceSpecError(f"device {device!r}: expected 'cuda', 'cuda:N' or 'cpu' ({exc})") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidDeviceSpecError(
                f"device {device!r}: CUDA is not available in this process (torch "
                f"{torch.__version__}); use device='cpu'"
            )
        index: int | None = dev.index
        if index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _default_dtype(kernel: Kernel, device: torch.device) -> torch.dtype:
    import torch

    if kernel is Kernel.TORCH_INT4:
        return torch.bfloat16  # tinygemm takes bf16 activations; the whole model runs in bf16
    if device.type == "cpu":
        return torch.float32  # fp16 matmul on CPU is slow and gains nothing; weights stay int4
    return torch.float16  # AutoAWQ's kernels are fp16 kernels


# --------------------------------------------------------------------------------------------------------------
# the hooks around AutoAWQ's from_quantized


@contextlib.contextmanager
def _patched(target: object, **attrs: object) -> Iterator[None]:
    saved = {name: getattr(target, name) for name in attrs}
    try:
        for name, value in attrs.items():
            setattr(target, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)


def _no_progress(iterable: Iterable[int], *args: object, **kwargs: object) -> Iterable[int]:
    return iterable


def _layer_index(info: CheckpointInfo) -> dict[str, QuantizedLayer]:
    return {layer.prefix: layer for layer in info.layers}


def _weights_loader(
    info: CheckpointInfo, target: Layout, device: torch.device, dtype: torch.dtype, conversions: list[str]
) -> Callable[..., None]:
    """A stand-in for accelerate's ``load_checkpoint_and_dispatch`` that converts layouts in memory."""

    def load(model: torch.nn.Module, *args: object, **kwargs: object) -> None:
        from accelerate.utils import set_module_tensor_to_device

        layers = _layer_index(info)
        expected = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        loaded: set[str] = set()
        unexpected: list[str] = []
        if info.layout is not target:
            conversions.append(f"{info.layout.value} -> {target.value}: repacked in memory at load (exact)")
        for name, tensor in iter_tensors(info, target):
            if name not in expected:
                unexpected.append(name)
                continue
            prefix, _, suffix = name.rpartition(".")
            value = tensor
            if value.is_floating_point() and not (prefix in layers and suffix in QUANTIZED_SUFFIXES):
                value = value.to(dtype)
            set_module_tensor_to_device(model, name, device, value=value)
            loaded.add(name)
        tie_weights = getattr(model, "tie_weights", None)
        if callable(tie_weights):
            tie_weights()
        still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type == "meta"]
        if still_meta:
            raise CorruptCheckpointError(
                f"{info.path}: the weights files lack {len(still_meta)} tensor(s) the model needs, e.g. "
                f"{', '.join(still_meta[:4])}: the checkpoint is incomplete or belongs to another model"
            )
        # Buffers that are not in the checkpoint (e.g. rotary inv_freq) were built on the CPU under AutoAWQ's
        # init_empty_weights; accelerate's dispatch would move them, so move them here. Left on the CPU they cost
        # a synchronizing host-to-device copy in every forward and make CUDA-graph capture impossible.
        model.to(device)
        if unexpected:
            logger.info("ignored %d tensors not used by the model, e.g. %s", len(unexpected), unexpected[:3])

    return load


def _build(
    info: CheckpointInfo,
    kernel: Kernel,
    device: torch.device,
    dtype: torch.dtype,
    *,
    fused: bool,
    max_seq_len: int | None,
    trust_remote_code: bool,
    conversions: list[str],
) -> torch.nn.Module:
    """Run AutoAWQ's from_quantized for ``kernel`` on ``device`` and return the model wrapper."""
    import torch

    from ._awq import import_awq

    import_awq()
    import awq.models.base as awq_base
    from awq import AutoAWQForCausalLM
    from awq.models._config import AwqConfig

    spec = CATALOGUE[kernel]
    target = spec.layout
    quant = AwqConfig(
        quant_method="awq",
        zero_point=target is not Layout.MARLIN,
        q_group_size=info.quant.group_size,
        w_bit=4,
        version=target.value,
        modules_to_not_convert=list(info.quant.modules_to_not_convert) or None,
    )

    class _FixedConfig:
        @staticmethod
        def from_pretrained(*args: object, **kwargs: object) -> AwqConfig:
            return quant

    # from_quantized forces IPEX whenever its device probe says exactly "cpu" (AWQ:awq/models/base.py:504-506);
    # for any other kernel on CPU, report the same device under a name that does not trigger that override.
    best_device = "cpu" if kernel is Kernel.IPEX else ("cpu:0" if device.type == "cpu" else str(device))
    with (
        _HOOK_LOCK,
        _patched(
            awq_base,
            AwqConfig=_FixedConfig,
            get_best_device=lambda: best_device,
            load_checkpoint_and_dispatch=_weights_loader(info, target, device, dtype, conversions),
            tqdm=_no_progress,  # AutoAWQ draws a progress bar per load on stderr; a library should not
        ),
        warnings.catch_warnings(),
    ):
        # AutoAWQ announces its deprecation and its own fallbacks with warnings; the report carries what matters.
        warnings.simplefilter("ignore")
        model: torch.nn.Module = AutoAWQForCausalLM.from_quantized(
            str(info.path),
            max_seq_len=max_seq_len,
            trust_remote_code=trust_remote_code,
            fuse_layers=fused,
            use_exllama=kernel is Kernel.EXLLAMA,
            use_exllama_v2=kernel is Kernel.EXLLAMAV2,
            use_ipex=kernel is Kernel.IPEX,
            device_map={"": str(device)},
            torch_dtype=dtype,
        )
    if kernel in (Kernel.GEMM_TORCH, Kernel.GEMM_TRITON):
        from ._modules import TorchGEMMLinear, TritonGEMMLinear, swap_gemm_backend

        swap_gemm_backend(model, TorchGEMMLinear if kernel is Kernel.GEMM_TORCH else TritonGEMMLinear)
    elif kernel is Kernel.TORCH_INT4:
        from ._torch_int4 import convert_model_to_torch_int4

        inner = getattr(model, "model", model)
        assert isinstance(inner, torch.nn.Module)
        count = convert_model_to_torch_int4(inner, dtype=dtype)
        conversions.append(f"gemm -> torch_int4: {count} layers repacked for aten._weight_int4pack_mm ({dtype})")
    model.eval()
    return model


# --------------------------------------------------------------------------------------------------------------
# the probe


def _reference_weight(
    info: CheckpointInfo, layer: QuantizedLayer, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors import safe_open

    from . import formats

    tensors: dict[str, torch.Tensor] = {}
    for suffix in QUANTIZED_SUFFIXES:
        meta = info.tensors.get(f"{layer.prefix}.{suffix}")
        if meta is not None:
            with safe_open(str(meta.file), framework="pt", device="cpu") as handle:
                tensors[suffix] = handle.get_tensor(meta.name)
    unpacked = formats.unpack(
        layer.layout,
        tensors,
        in_features=layer.in_features,
        out_features=layer.out_features,
        group_size=info.quant.group_size,
    )
    weight = formats.dequantize(unpacked).to(device)
    bias = tensors.get("bias")
    return weight, (bias.to(device=device, dtype=weight.dtype) if bias is not None else None)


def _probe_layers(info: CheckpointInfo, names: set[str]) -> list[QuantizedLayer]:
    present = [layer for layer in info.layers if layer.prefix in names]
    if not present:
        return []
    picks = {present[0].prefix: present[0], present[-1].prefix: present[-1]}
    widest = max(present, key=lambda layer: layer.in_features)
    picks.setdefault(widest.prefix, widest)
    return list(picks.values())[:_PROBE_LAYERS]


def _run_probe(
    awq_model: torch.nn.Module, info: CheckpointInfo, device: torch.device, tolerance: float, seed: int = 0
) -> ProbeResult:
    """Run a prefill-sized and a one-token forward; compare probed layers with the float32 reference."""
    import torch

    hf_model = getattr(awq_model, "model", awq_model)
    assert isinstance(hf_model, torch.nn.Module)
    modules = dict(hf_model.named_modules())
    layers = _probe_layers(info, set(modules))
    captured: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {layer.prefix: [] for layer in layers}

    def make_hook(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            captured[name].append((inputs[0].detach(), output.detach()))

        return hook

    handles = [modules[layer.prefix].register_forward_hook(make_hook(layer.prefix)) for layer in layers]
    vocab = int(getattr(hf_model.config, "vocab_size", 0) or 0) or 32
    generator = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, vocab, (1, _PROBE_PROMPT_TOKENS), generator=generator).to(device)
    logits_finite = True
    try:
        with torch.no_grad():
            # A prompt-sized forward and a one-token forward: GEMV-class kernels switch code paths by rows.
            for batch in (ids, ids[:, :1]):
                out = hf_model(input_ids=batch, use_cache=False)
                logits = out.logits if hasattr(out, "logits") else out[0]
                logits_finite = logits_finite and bool(torch.isfinite(logits.float()).all())
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        for handle in handles:
            handle.remove()
    checks: list[LayerCheck] = []
    for layer in layers:
        weight, bias = _reference_weight(info, layer, device)
        for x, y in captured[layer.prefix]:
            x2 = x.reshape(-1, layer.in_features).float()
            ref = x2 @ weight.t()
            if bias is not None:
                ref = ref + bias
            got = y.reshape(-1, layer.out_features).float()
            finite = bool(torch.isfinite(got).all())
            diff = got - ref
            denom = float(torch.linalg.vector_norm(ref)) or 1.0
            rel = float(torch.linalg.vector_norm(diff)) / denom if finite else math.inf
            max_abs = float(diff.abs().max()) if finite else math.inf
            checks.append(LayerCheck(layer.prefix, x2.shape[0], rel, max_abs, finite))
    worst = max(checks, key=lambda c: c.rel_error, default=None)
    ok = logits_finite and all(c.finite and c.rel_error <= tolerance for c in checks)
    if not checks:
        message = "no quantized layer could be probed by name (fused layers?): checked logits are finite only"
    elif ok and worst is not None:
        message = (
            f"{len(checks)} layer outputs within {tolerance:g} of the float32 dequantized reference "
            f"(worst {worst.rel_error:.2e}, {worst.name}, {worst.rows} rows)"
        )
    elif worst is not None and not worst.finite:
        message = f"{worst.name} returned non-finite values with {worst.rows} rows: the kernel is broken here"
    elif worst is not None and worst.rel_error > tolerance:
        message = (
            f"{worst.name} differs from the dequantized reference by {worst.rel_error:.3g} (relative) with "
            f"{worst.rows} rows, tolerance {tolerance:g}: the kernel returns wrong numbers here"
        )
    else:
        message = "the model's logits are not finite"
    return ProbeResult(ok=ok, tolerance=tolerance, checks=tuple(checks), logits_finite=logits_finite, message=message)


# --------------------------------------------------------------------------------------------------------------
# the fallback walk


def _release(device: torch.device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _check_cuda_context(device: torch.device, error: BaseException, attempts: list[Attempt]) -> None:
    """Raise CudaContextPoisonedError when the CUDA context no longer works after ``error``."""
    import torch

    if device.type != "cuda":
        return
    try:
        torch.cuda.synchronize(device)
        probe = torch.ones(1, device=device)
        _ = float((probe + 1).item())
    except Exception as exc:  # any failure here means the context is gone
        tried = "; ".join(str(a) for a in attempts)
        raise CudaContextPoisonedError(
            f"a CUDA error left this process's CUDA context unusable ({type(error).__name__}: {error}); no more "
            f"kernels can be tried in this process. Attempts: {tried}. Probe each version in a fresh process "
            "instead, e.g. `awq-autoselect load PATH --version gemm --json`, then pass the version that works "
            "to load_quantized_auto(path, version=...)."
        ) from exc


def _fuse_options(kernel: Kernel, fuse_layers: bool | None, device: torch.device, env: Environment) -> list[bool]:
    if fuse_layers is False or device.type != "cuda" or not CATALOGUE[kernel].fusable:
        return [False]
    # AutoAWQ's fused layers need its awq_ext (fused norm) and flash-attn >= 2.6 (AWQ:awq/modules/fused/attn.py).
    if fuse_layers is None and not (env.available("awq_ext") and env.available("flash_attn")):
        return [False]
    return [True, False]


def _short(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_quantized_auto(
    path: str | os.PathLike[str],
    version: str | Kernel = "auto",
    *,
    device: str | torch.device | None = None,
    fuse_layers: bool | None = None,
    probe: bool = True,
    fallback: bool = True,
    workload: Workload | None = None,
    selection: Selection | None = None,
    environment: Environment | None = None,
    max_seq_len: int | None = None,
    torch_dtype: torch.dtype | None = None,
    probe_tolerance: float = DEFAULT_PROBE_TOLERANCE,
    trust_remote_code: bool = False,
) -> LoadResult:
    """Load an AWQ checkpoint with the best kernel that works here, proven by a forward with a numeric check.

    Args:
        path: local checkpoint directory (config.json with an AWQ ``quantization_config`` + safetensors).
        version: ``"auto"``, or a kernel version to try first (``"gemv"``, ``"gemm"``, ``"torch_int4"``, ...).
        device: ``"cuda"``, ``"cuda:1"`` or ``"cpu"``; default: the current CUDA device, else CPU.
        fuse_layers: AutoAWQ's fused layers. ``None``: only where they can work (awq_ext and flash-attn >= 2.6
            importable); a fused attempt that fails is retried unfused.
        probe: run the numeric probe after loading (recommended: a load is not proof).
        fallback: walk the selection's chain when the requested or preferred kernel cannot run. With False, a
            version that cannot run raises instead.
        workload: what the model will do (batch size, prompt and output lengths); steers the choice.
        selection: a ready :class:`~awq_autoselect.selection.Selection` (e.g. planned with
            ``select_awq_version``); its chain is tried in order, each kernel for real.
        environment: the kernel-module probe to select with (default: :func:`probe_environment`).
        max_seq_len: passed to AutoAWQ (fused layers' cache size).
        torch_dtype: dtype of the non-quantized weights and activations. Default: float16 on CUDA, bfloat16 for
            torch_int4, float32 on CPU.
        probe_tolerance: relative error allowed between a probed layer and its float32 reference.
        trust_remote_code: passed to transformers; off by default.

    Returns:
        ``LoadResult(model, report)``. A :class:`~awq_autoselect.errors.FallbackWarning` is emitted when the
        kernel used is not the one requested or first chosen.

    Raises:
        CheckpointError: (and subclasses) the path is not a usable AWQ checkpoint; nothing was loaded.
        UnknownVersionError: ``version`` is not a known kernel name.
        VersionUnavailableError: ``fallback=False`` and the requested version cannot run here.
        KernelFailedError: every candidate failed to load or to pass the probe (``.attempts`` lists them).
        CudaContextPoisonedError: a CUDA error made the context unusable; probe in a fresh process.
    """
    started = time.perf_counter()
    info = read_checkpoint(path)
    requested = "auto" if str(version).lower() == "auto" else parse_kernel(version).value

    import torch

    from .environment import probe_environment
    from .selection import select_awq_version

    dev = _resolve_device(device)
    env = environment if environment is not None else probe_environment()
    if selection is None:
        capability = torch.cuda.get_device_capability(dev) if dev.type == "cuda" else None
        selection = select_awq_version(
            info,
            version=requested,
            capability=capability,
            device=dev.type,
            environment=env,
            workload=workload,
            strict=not fallback,
        )
    attempts: list[Attempt] = []
    chain = list(selection.chain)
    if requested != "auto" and (not chain or chain[0].value != requested):
        reasons = selection.rejected.get(Kernel(requested), ("not viable here",))
        attempts.append(Attempt(Kernel(requested), False, "skipped", False, None, "; ".join(reasons)))
        if not fallback:
            raise VersionUnavailableError(
                f"version {requested!r} cannot run here: {'; '.join(reasons)}", requested, tuple(reasons)
            )
    if not fallback:
        chain = chain[:1]

    conversions: list[str] = []
    for kernel in chain:
        for fused in _fuse_options(kernel, fuse_layers, dev, env):
            dtype = torch_dtype or _default_dtype(kernel, dev)
            t0 = time.perf_counter()
            conversions.clear()
            model: torch.nn.Module | None = None
            stage = "load"
            try:
                model = _build(
                    info,
                    kernel,
                    dev,
                    dtype,
                    fused=fused,
                    max_seq_len=max_seq_len,
                    trust_remote_code=trust_remote_code,
                    conversions=conversions,
                )
                result = None
                if probe:
                    stage = "probe"
                    result = _run_probe(model, info, dev, probe_tolerance)
                    if not result.ok:
                        raise _ProbeMismatchError(result.message)
            except AwqAutoselectError as exc:
                if not isinstance(exc, ConversionError):
                    raise
                attempts.append(
                    Attempt(kernel, fused, stage, False, type(exc).__name__, _short(exc), time.perf_counter() - t0)
                )
                model = None
                _release(dev)
                continue
            except _RETRYABLE as exc:
                attempts.append(
                    Attempt(kernel, fused, stage, False, type(exc).__name__, _short(exc), time.perf_counter() - t0)
                )
                logger.info("kernel %s failed at %s: %s", kernel, stage, exc)
                model = None
                _release(dev)
                _check_cuda_context(dev, exc, attempts)
                continue
            attempts.append(Attempt(kernel, fused, "ok", True, seconds=time.perf_counter() - t0))
            report = LoadReport(
                path=str(info.path),
                requested=requested,
                kernel=kernel,
                device=str(dev),
                dtype=str(dtype).replace("torch.", ""),
                # AutoAWQ skips fusing silently in some setups (no awq_ext): report what was built.
                fused=any(type(m).__module__.startswith("awq.modules.fused") for m in model.modules()),
                checkpoint_layout=info.layout,
                loaded_layout=CATALOGUE[kernel].layout,
                conversions=tuple(conversions),
                attempts=tuple(attempts),
                probe=result,
                selection=selection,
                seconds=time.perf_counter() - started,
            )
            failed = [a for a in attempts if not a.ok]
            if failed:
                warnings.warn(
                    f"awq_autoselect loaded {info.path.name} with {kernel} instead of {failed[0].kernel}: "
                    + "; ".join(str(a) for a in failed),
                    FallbackWarning,
                    stacklevel=2,
                )
            if kernel is Kernel.GEMM_TORCH:
                logger.info("using the slow torch dequantize path (gemm_torch) for %s", info.path)
            return LoadResult(model, report)
    raise KernelFailedError(
        f"no kernel could load and run {info.path} on {dev}:\n" + "\n".join(f"  - {a}" for a in attempts),
        attempts,
    )


def load_dense_baseline(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> LoadResult:
    """The same model with every quantized layer replaced by a dense ``nn.Linear`` of dequantized weights.

    The fp16 baseline for benchmarks: identical shapes and numerics, no int4 kernel.
    """
    import torch

    from ._awq import import_awq

    import_awq()
    from awq.utils.packing_utils import dequantize_gemm

    from ._modules import TorchGEMMLinear

    started = time.perf_counter()
    info = read_checkpoint(path)
    dev = _resolve_device(device)
    dense_dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    conversions: list[str] = []
    model = _build(
        info,
        Kernel.GEMM_TORCH,
        dev,
        dense_dtype,
        fused=False,
        max_seq_len=None,
        trust_remote_code=False,
        conversions=conversions,
    )
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, TorchGEMMLinear):
                weight = dequantize_gemm(child.qweight, child.qzeros, child.scales, 4, child.group_size)
                linear = torch.nn.Linear(
                    child.in_features, child.out_features, bias=child.bias is not None, device=dev, dtype=dense_dtype
                )
                with torch.no_grad():
                    linear.weight.copy_(weight.t().to(dense_dtype))
                    if child.bias is not None:
                        linear.bias.copy_(child.bias.to(dense_dtype))
                setattr(parent, child_name, linear)
                replaced += 1
    _release(dev)
    conversions.append(f"{replaced} quantized layers dequantized to dense {dense_dtype} nn.Linear")
    report = LoadReport(
        path=str(info.path),
        requested="fp16" if dense_dtype == torch.float16 else str(dense_dtype).replace("torch.", ""),
        kernel=None,
        device=str(dev),
        dtype=str(dense_dtype).replace("torch.", ""),
        fused=False,
        checkpoint_layout=info.layout,
        loaded_layout=None,
        conversions=tuple(conversions),
        attempts=(),
        probe=None,
        seconds=time.perf_counter() - started,
    )
    return LoadResult(model, report)
