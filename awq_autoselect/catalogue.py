"""The AutoAWQ kernel versions and what each one needs, as plain data.

This module imports neither torch nor awq: the table can be read, printed and reasoned about on a machine
without either. Every fact carries its source in a comment. Abbreviations used there:

- ``AWQ:``   AutoAWQ 0.2.9 (casper-hansen/AutoAWQ tag v0.2.9), path:line.
- ``KRN:``   autoawq-kernels 0.0.9 (casper-hansen/AutoAWQ_kernels tag v0.0.9), path:line.
- ``WHEEL:`` the SASS targets found in the released autoawq_kernels-0.0.9 wheel's fatbins (no PTX embedded).
- ``MARLIN:`` IST-DASLab/marlin.
- ``H200:``  measured on this project's lent H200/H100 (docs/benchmarks.md, shared research notes).

A GPU runs a prebuilt kernel only if the wheel carries SASS for its major version with a minor version no
higher than the GPU's (sm_86 runs on 8.6 and 8.9, never on 9.0 or 12.0), because no PTX is embedded: so a
V100 (7.0) and every Blackwell GPU (10.x, 12.x) get "no kernel image" from AutoAWQ's compiled kernels.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.specifiers import SpecifierSet

from .capability import ComputeCapability
from .errors import UnknownVersionError
from .workload import Regime  # re-exported: Priority.of takes one

__all__ = [
    "CATALOGUE",
    "INT4_OPS",
    "INT4_OPS_CPU",
    "FailureStage",
    "Kernel",
    "KernelSpec",
    "Layout",
    "Priority",
    "Regime",
    "get_spec",
    "parse_kernel",
]


def __dir__() -> list[str]:
    return __all__


class Kernel(str, enum.Enum):
    """A kernel version that can run an AWQ checkpoint. The value is the name users type."""

    GEMM = "gemm"  # WQLinear_GEMM with AutoAWQ's compiled awq_ext kernel
    GEMM_TRITON = "gemm_triton"  # WQLinear_GEMM's Triton kernel (AutoAWQ's fallback without awq_ext)
    GEMM_TORCH = "gemm_torch"  # dequantize in torch, then torch.matmul: runs anywhere, slowly
    GEMV = "gemv"
    GEMV_FAST = "gemv_fast"
    MARLIN = "marlin"
    EXLLAMA = "exllama"
    EXLLAMAV2 = "exllamav2"
    IPEX = "ipex"
    TORCH_INT4 = "torch_int4"  # PyTorch's own int4 weight-only kernel (tinygemm); added by awq_autoselect
    GEMV_TRITON = "gemv_triton"  # awq_autoselect's own Triton kernel for batch-1 decode

    def __str__(self) -> str:
        return self.value


class Layout(str, enum.Enum):
    """A packed weight layout, as written in ``quantization_config.version`` of a checkpoint."""

    GEMM = "gemm"  # qweight int32 [K, N/8] in AWQ order; qzeros int32 [K/g, N/8]; scales fp16 [K/g, N]
    GEMV = "gemv"  # qweight int32 [N, K/8] natural order; qzeros int32 [N, zw]; scales fp16 [N, zw*8]
    GEMV_FAST = "gemv_fast"  # qweight int16 [N/4, K] interleaved; scales/qzeros fp16 [zw*8, N], qzeros=-s*z
    MARLIN = "marlin"  # symmetric, no qzeros; qweight int32 [K/16, 2N] in Marlin tile order

    def __str__(self) -> str:
        return self.value


class FailureStage(str, enum.Enum):
    """When a missing or broken kernel shows itself to a caller of ``from_quantized``."""

    LOAD = "load"
    FIRST_FORWARD = "first_forward"
    NEVER = "never"  # pure torch: no extension to be missing

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Priority:
    """Published preference per :class:`Regime` (higher is preferred); see docs/selection.md for the sources.
    Measured trials, where they exist, rank before these (:mod:`awq_autoselect.selection`)."""

    decode: int
    prefill: int
    batch: int

    def of(self, regime: Regime) -> int:
        """The priority for ``regime``."""
        return {Regime.DECODE: self.decode, Regime.PREFILL: self.prefill, Regime.BATCH: self.batch}[regime]


#: The aten ops behind :data:`Kernel.TORCH_INT4` on CUDA, and on CPU (``*_for_cpu``, torch 2.6+).
INT4_OPS: tuple[str, ...] = ("_weight_int4pack_mm", "_convert_weight_to_int4pack")
INT4_OPS_CPU: tuple[str, ...] = ("_weight_int4pack_mm_for_cpu", "_convert_weight_to_int4pack_for_cpu")


def _cc(text: str) -> ComputeCapability:
    return ComputeCapability.parse(text)


def _ccs(*texts: str) -> frozenset[ComputeCapability]:
    return frozenset(_cc(t) for t in texts)


# WHEEL: awq_ext, exl_ext, exlv2_ext carry sm_75, 80, 86, 87, 89, 90 (KRN:setup.py:14 default list);
# awq_v2_ext carries sm_80, 86, 89, 90 (KRN:setup.py:189-190 "only compatible with ampere").
_AWQ_EXT_IMAGES = _ccs("7.5", "8.0", "8.6", "8.7", "8.9", "9.0")
_AWQ_V2_EXT_IMAGES = _ccs("8.0", "8.6", "8.9", "9.0")


@dataclass(frozen=True)
class KernelSpec:
    """One kernel version's contract: what it needs from the machine, the checkpoint and the workload.

    Checked in two stages by :mod:`awq_autoselect.selection`: the machine (device, capability, extension
    module, torch version and ops) once, the checkpoint (bits, group size, zero point, shapes) per call. Every
    requirement the selector checks is a field here; the spec is frozen and hashable.
    """

    kernel: Kernel
    summary: str
    module_class: str  # the nn.Module class that runs it (dotted path)
    layout: Layout  # the packed layout that class holds; other layouts are converted at load
    extension: str | None  # the Python module it imports; None for pure torch
    devices: frozenset[str]  # device types: "cuda", "cpu", "xpu"
    min_capability: ComputeCapability | None  # CUDA only; None where it does not apply
    sass_targets: frozenset[ComputeCapability] | None  # prebuilt images; None = compiled for the local GPU
    group_sizes: frozenset[int] | None  # None: any group size that divides in_features; -1 is per-channel
    # zero_point settings the kernel stores: {True} kernels also run symmetric weights exactly (zero = 8);
    # {False} (Marlin) cannot represent asymmetric weights.
    zero_point: frozenset[bool]
    priority: Priority  # published preference per regime; see docs/selection.md
    failure_stage: FailureStage  # when a missing/broken extension surfaces in plain AutoAWQ
    bits: frozenset[int] = frozenset({4})
    torch: SpecifierSet | None = None  # torch versions it needs (None: any torch AutoAWQ runs on)
    # aten ops it calls, per device type: (("cuda", ops), ("cpu", ops)); checked against the probed torch
    torch_ops: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # the dtype its activations must have, per device type (None: fp16 on CUDA, float32 on the CPU)
    activation_dtypes: tuple[tuple[str, str], ...] = ()
    in_features_multiple: int = 1
    out_features_multiple: int = 1
    fusable: bool = False  # AutoAWQ's fused layers can use it (they also need awq_ext and flash-attn >= 2.6)
    # AutoAWQ repacks its zero points as zero - 1 (GPTQ's convention; the kernel adds the 1 back): a zero point of
    # 0 becomes -1, which borrows from the next zero point of its packed word (pack_exllama sums the shifted
    # nibbles), and the layer computes wrong numbers (AWQ:awq/utils/packing_utils.py unpack_reorder_pack).
    # Selection rejects the kernel for a checkpoint with such a zero point; its trials draw zero points from 1-15.
    zero_minus_one: bool = False
    # Its layers call their kernel through a torch custom op (with a fake implementation), which torch.compile
    # traces although the kernel itself lives in an extension (Triton).
    custom_op: bool = False
    # Why "auto" does not choose it (it runs only when asked for by name), or None. For kernels still being made fast.
    experimental: str | None = None

    silent_failure: str | None = None  # a way it returns wrong numbers instead of raising
    caveats: tuple[str, ...] = ()
    sources: tuple[str, ...] = field(default=())

    @property
    def traceable(self) -> bool:
        """Whether torch.compile can trace its layers: no compiled extension is called in them (Dynamo cannot see
        into pybind11 functions, H200 run 2026-12-01), or only through a custom op. Untraceable kernels decode from
        a CUDA graph uncompiled."""
        return self.extension is None or self.custom_op

    def ops_for(self, device_type: str) -> tuple[str, ...]:
        """The aten ops this kernel calls on ``device_type`` (empty for none)."""
        return next((ops for device, ops in self.torch_ops if device == device_type), ())

    def activation_dtype(self, device_type: str) -> str | None:
        """The dtype its activations must have on ``device_type`` (``"bfloat16"``), or ``None`` for the default."""
        return next((dtype for device, dtype in self.activation_dtypes if device == device_type), None)

    def dtype_on(self, device_type: str) -> str:
        """The dtype activations have with this kernel on ``device_type``: its own (:attr:`activation_dtypes`),
        else float16 on CUDA (AutoAWQ's kernels are fp16 kernels) and float32 elsewhere."""
        return self.activation_dtype(device_type) or ("float16" if device_type == "cuda" else "float32")

    def runs_on(self, capability: ComputeCapability) -> tuple[bool, str]:
        """Whether this kernel has code for a GPU of ``capability``, and if not, why."""
        if self.min_capability is not None and capability < self.min_capability:
            return False, (
                f"needs compute capability >= {self.min_capability}, this GPU is {capability} "
                f"({capability.architecture})"
            )
        if self.sass_targets is not None:
            compatible = [t for t in self.sass_targets if t.major == capability.major and t.minor <= capability.minor]
            if not compatible:
                built = ", ".join(sorted(t.sm for t in self.sass_targets))
                return False, (
                    f"the released {self.extension} wheel has no kernel image for {capability.sm} "
                    f"(built for {built}, no PTX): 'no kernel image is available' at the first forward"
                )
        return True, ""


_GEMM_SOURCES = ("AWQ:awq/modules/linear/gemm.py:18-84,129-130,193", "KRN:awq_ext/quantization/gemm_cuda_gen.cu")

CATALOGUE: Mapping[Kernel, KernelSpec] = types.MappingProxyType(
    {
        spec.kernel: spec
        for spec in (
            KernelSpec(
                kernel=Kernel.GEMM,
                summary="AutoAWQ GEMM, compiled awq_ext kernel (dequantize + cuBLAS for >= 1024 tokens)",
                module_class="awq.modules.linear.gemm.WQLinear_GEMM",
                layout=Layout.GEMM,
                extension="awq_ext",
                devices=frozenset({"cuda"}),
                # ldmatrix and mma.m16n8k8 need sm_75 (KRN:gemm_cuda_gen.cu:167-239).
                min_capability=_cc("7.5"),
                sass_targets=_AWQ_EXT_IMAGES,
                # The CUDA gemm checks "Group size should be a multiple of 32" (KRN:gemm_cuda_gen.cu:1258-1264).
                group_sizes=frozenset({-1, 32, 64, 128, 256}),
                zero_point=frozenset({True}),  # AWQ:gemm.py:193 asserts zeros is not None
                out_features_multiple=64,  # "OC is not multiple of cta_N = 64" (KRN:gemm_cuda_gen.cu:1258)
                priority=Priority(decode=60, prefill=80, batch=85),
                failure_stage=FailureStage.FIRST_FORWARD,
                fusable=True,
                sources=(*_GEMM_SOURCES, "AWQ:README.md:92-98 'good with large contexts'"),
            ),
            KernelSpec(
                kernel=Kernel.GEMM_TRITON,
                summary="AutoAWQ GEMM through its Triton kernel (what GEMM runs when awq_ext cannot import)",
                module_class="awq_autoselect.kernels.gemm.TritonGEMMLinear",
                layout=Layout.GEMM,
                extension="triton",
                devices=frozenset({"cuda"}),
                # Triton's README lists NVIDIA compute capability 8.0+ as supported; it JIT-compiles locally.
                min_capability=_cc("8.0"),
                sass_targets=None,
                # AWQ:awq/modules/triton/gemm.py:21,270,331 assert group_size in [-1, 32, 64, 128] or == K.
                group_sizes=frozenset({-1, 32, 64, 128}),
                zero_point=frozenset({True}),
                priority=Priority(decode=50, prefill=75, batch=80),
                failure_stage=FailureStage.FIRST_FORWARD,
                caveats=("H200: 7.7 ms of GPU time per decode token for a 7B Llama, slower than fp16 (3.7 ms)",),
                sources=(*_GEMM_SOURCES, "AWQ:awq/modules/triton/gemm.py", "H200: research/h200-measurements.md"),
            ),
            KernelSpec(
                kernel=Kernel.GEMM_TORCH,
                summary="Dequantize the GEMM-layout weights in torch, then torch.matmul (any device, slow)",
                module_class="awq_autoselect.kernels.gemm.TorchGEMMLinear",
                layout=Layout.GEMM,
                extension=None,
                devices=frozenset({"cuda", "cpu", "xpu", "mps"}),
                min_capability=None,
                sass_targets=None,
                group_sizes=None,
                zero_point=frozenset({True}),
                priority=Priority(decode=10, prefill=10, batch=10),
                failure_stage=FailureStage.NEVER,
                caveats=("dequantizes every weight on every forward: correct everywhere, fast nowhere",),
                sources=("AWQ:awq/modules/linear/gemm.py:78-84 (naive branch)", "AWQ:awq/utils/packing_utils.py:87"),
            ),
            KernelSpec(
                kernel=Kernel.GEMV,
                summary="AutoAWQ GEMV (awq_ext): fastest AutoAWQ decode at batch 1, slow prefill",
                module_class="awq.modules.linear.gemv.WQLinear_GEMV",
                layout=Layout.GEMV,
                extension="awq_ext",
                devices=frozenset({"cuda"}),
                min_capability=_cc("7.5"),  # gemmv2 (rows > 8) uses ldmatrix/mma; wheel images start at sm_75
                sass_targets=_AWQ_EXT_IMAGES,
                # KRN:gemv_cuda.cu:229-247 instantiate 64 and 128 only; other sizes return torch::empty garbage.
                group_sizes=frozenset({64, 128}),
                zero_point=frozenset({True}),
                # README "20% faster than GEMM, only batch size 1 (not good for large context)"; v0.1.6 tables:
                # GEMV prefill about 10x slower than GEMM; "avoid" at batch 8.
                priority=Priority(decode=90, prefill=25, batch=5),
                failure_stage=FailureStage.FIRST_FORWARD,  # AWQ:gemv.py:158-159 ModuleNotFoundError in forward
                silent_failure="group sizes other than 64/128 return uninitialised memory (KRN:gemv_cuda.cu:229-247)",
                caveats=(
                    "loads weights past the row end when in_features is not a multiple of 1024 (e.g. 11008); "
                    "usually hidden by allocator slack, an illegal memory access when not (H200)",
                ),
                sources=("AWQ:awq/modules/linear/gemv.py:12-24,158-180", "KRN:awq_ext/quantization/gemv_cuda.cu"),
            ),
            KernelSpec(
                kernel=Kernel.GEMV_FAST,
                summary="AutoAWQ GEMV_fast (awq_v2_ext): decode kernel for batch < 8 plus a prefill GEMM",
                module_class="awq.modules.linear.gemv_fast.WQLinear_GEMVFast",
                layout=Layout.GEMV_FAST,
                extension="awq_v2_ext",
                devices=frozenset({"cuda"}),
                # cp.async + mma.m16n8k16 without arch guards (KRN:quantization_new/gemm/gemm_cuda.cu:114,124).
                min_capability=_cc("8.0"),
                sass_targets=_AWQ_V2_EXT_IMAGES,
                # decode throws for other sizes; prefill hard-codes G = 128 and is silently wrong otherwise.
                group_sizes=frozenset({128}),
                zero_point=frozenset({True}),
                in_features_multiple=64,  # rows interleaved with kstride 64 (AWQ:gemv_fast.py:26-65)
                out_features_multiple=4,
                priority=Priority(decode=95, prefill=90, batch=90),  # PR #365 (RTX 4090)
                failure_stage=FailureStage.FIRST_FORWARD,  # AWQ:gemv_fast.py:187-188
                silent_failure="prefill hard-codes group size 128 (KRN:quantization_new/gemm/gemm_cuda.cu)",
                caveats=("fp16 activations only: bf16 input fails in data_ptr<at::Half>()",),
                sources=("AWQ:awq/modules/linear/gemv_fast.py", "KRN:awq_ext/quantization_new/"),
            ),
            KernelSpec(
                kernel=Kernel.MARLIN,
                summary="Marlin (IST-DASLab marlin_cuda): symmetric int4, fast at every batch size up to ~32",
                module_class="awq.modules.linear.marlin.WQLinear_Marlin",
                layout=Layout.MARLIN,
                extension="marlin_cuda",  # built from IST-DASLab/marlin; not in autoawq-kernels
                devices=frozenset({"cuda"}),
                min_capability=_cc("8.0"),  # MARLIN:README.md:65; cp.async/mma.m16n8k16 unguarded
                sass_targets=None,  # the user builds it for the local GPU
                group_sizes=frozenset({-1, 128}),  # only these are instantiated (MARLIN:marlin_cuda_kernel.cu:801-812)
                zero_point=frozenset({False}),  # no zeros: AWQ:marlin.py:111 asserts zeros is None
                in_features_multiple=128,
                out_features_multiple=256,
                priority=Priority(decode=100, prefill=100, batch=100),
                failure_stage=FailureStage.FIRST_FORWARD,  # AWQ:marlin.py:177-178
                sources=("AWQ:awq/modules/linear/marlin.py", "MARLIN:README.md"),
            ),
            KernelSpec(
                kernel=Kernel.EXLLAMA,
                summary="ExLlama v1 (exl_ext) on GEMM-layout weights, repacked at load",
                module_class="awq.modules.linear.exllama.WQLinear_Exllama",
                layout=Layout.GEMM,
                extension="exl_ext",
                devices=frozenset({"cuda"}),
                min_capability=_cc("7.5"),  # source is sm_60+ capable, but the wheel only carries sm_75+
                sass_targets=_AWQ_EXT_IMAGES,
                group_sizes=None,  # any group size that divides in_features
                zero_point=frozenset({True}),
                priority=Priority(decode=70, prefill=70, batch=60),
                zero_minus_one=True,
                # post_init calls exl_ext.make_q4 -> AttributeError on None at load (AWQ:exllama.py:73)
                failure_stage=FailureStage.LOAD,
                sources=("AWQ:awq/modules/linear/exllama.py", "KRN:awq_ext/exllama/exllama_ext.cpp"),
            ),
            KernelSpec(
                kernel=Kernel.EXLLAMAV2,
                summary="ExLlamaV2 (exlv2_ext) on GEMM-layout weights, repacked at load",
                module_class="awq.modules.linear.exllamav2.WQLinear_ExllamaV2",
                layout=Layout.GEMM,
                extension="exlv2_ext",
                devices=frozenset({"cuda"}),
                min_capability=_cc("7.5"),
                sass_targets=_AWQ_EXT_IMAGES,
                # group size is recomputed as a power of two >= K/groups (KRN:exllamav2/cuda/q_matrix.cu:88-89)
                group_sizes=frozenset({-1, 32, 64, 128, 256}),
                zero_point=frozenset({True}),
                in_features_multiple=32,
                out_features_multiple=32,
                # PR #313: decode ~19% faster than GEMM at bs1, prefill 2x for context > 512, 0% at bs8.
                priority=Priority(decode=85, prefill=95, batch=70),
                zero_minus_one=True,
                failure_stage=FailureStage.LOAD,  # make_q_matrix on None at load (AWQ:exllamav2.py:78)
                sources=("AWQ:awq/modules/linear/exllamav2.py", "KRN:awq_ext/exllamav2/"),
            ),
            KernelSpec(
                kernel=Kernel.IPEX,
                summary="Intel Extension for PyTorch weight-only int4 (CPU/XPU), repacked at the first forward",
                module_class="awq.modules.linear.gemm_ipex.WQLinear_IPEX",
                layout=Layout.GEMM,
                extension="intel_extension_for_pytorch",
                devices=frozenset({"cpu", "xpu"}),  # post_init asserts cpu/xpu (AWQ:gemm_ipex.py:69)
                min_capability=None,
                sass_targets=None,
                group_sizes=None,  # whatever IPEX accepts: not documented by AutoAWQ
                zero_point=frozenset({True}),
                # each IPEX release needs its own torch minor version (checked by the probe)
                priority=Priority(decode=40, prefill=40, batch=40),
                failure_stage=FailureStage.LOAD,  # ImportError / AssertionError in from_quantized
                sources=("AWQ:awq/modules/linear/gemm_ipex.py", "AWQ:awq/models/base.py:504-511"),
            ),
            KernelSpec(
                kernel=Kernel.TORCH_INT4,
                summary="PyTorch's int4 weight-only matmul (aten._weight_int4pack_mm, 'tinygemm'), bf16",
                module_class="awq_autoselect.kernels.torch_int4.TorchInt4Linear",
                layout=Layout.GEMM,
                extension=None,
                devices=frozenset({"cuda", "cpu"}),
                # tinygemm's CUDA kernel uses bf16 mma: compute capability 8.0+ (torch/ao docs).
                min_capability=_cc("8.0"),
                sass_targets=None,  # ships inside torch, built for torch's own arch list
                group_sizes=frozenset({32, 64, 128, 256}),
                zero_point=frozenset({True}),
                torch=SpecifierSet(">=2.6"),  # uint8 [N, K/2] pack input since 2.5; the *_for_cpu ops since 2.6
                torch_ops=(("cuda", INT4_OPS), ("cpu", INT4_OPS_CPU)),
                # tinygemm on CUDA takes bf16 activations only (torch 2.11); the CPU kernel takes bf16/fp16/fp32.
                activation_dtypes=(("cuda", "bfloat16"), ("cpu", "bfloat16")),
                in_features_multiple=128,  # K must be a multiple of innerKTiles * 16 (innerKTiles = 8 here)
                out_features_multiple=8,
                priority=Priority(decode=80, prefill=60, batch=50),
                failure_stage=FailureStage.LOAD,  # awq_autoselect repacks at load; errors surface there
                caveats=(
                    "scales and zeros are held in bf16: dequantized weights match AWQ's (q - z) * s up to bf16 "
                    "rounding (docs/torch-int4.md)",
                ),
                sources=("H200: research/h200-measurements.md (2.3 ms/token vs 7.7 ms Triton GEMM)",),
            ),
            KernelSpec(
                kernel=Kernel.GEMV_TRITON,
                summary="awq_autoselect's Triton gemv for batch-1 decode on AWQ weights repacked at load "
                "(dequantize + cuBLAS from 5 rows)",
                module_class="awq_autoselect.kernels.triton_int4.TritonInt4Linear",
                layout=Layout.GEMM,
                extension="triton",
                custom_op=True,
                devices=frozenset({"cuda"}),
                min_capability=_cc("8.0"),  # Triton's supported NVIDIA GPUs
                sass_targets=None,  # Triton compiles for the local GPU
                group_sizes=frozenset({32, 64, 128, 256}),  # the gemv layout needs a power of two >= 32
                zero_point=frozenset({True}),
                torch=SpecifierSet(">=2.4"),  # torch.library.custom_op
                in_features_multiple=32,
                out_features_multiple=4,  # rows are interleaved by 4
                # No published ranking: below torch_int4 until the trials measure it on this machine.
                priority=Priority(decode=75, prefill=55, batch=30),
                failure_stage=FailureStage.LOAD,  # repacked and tuned at load: a Triton that cannot compile fails there
                caveats=("fast at 1 row only; more rows read the weights again (up to 4) or dequantize per call",),
                experimental=(
                    "still slower than torch_int4 at batch 1 (lent H100: 3.70 against 2.86 ms/token through "
                    "generate(), docs/benchmarks.md)"
                ),
                sources=("H200/H100: docs/benchmarks.md (per-layer tables)",),
            ),
        )
    }
)


def parse_kernel(name: str | Kernel) -> Kernel:
    """The :class:`Kernel` for a name: case-insensitive, ``-`` and ``_`` alike (``"GEMV-fast"``).

    Raises:
        UnknownVersionError: the name is none of the catalogue's versions.
    """
    if isinstance(name, Kernel):
        return name
    key = str(name).strip().lower().replace("-", "_")
    aliases = {
        "gemvfast": "gemv_fast",
        "exllama_v2": "exllamav2",
        "exllama2": "exllamav2",
        "tinygemm": "torch_int4",
        "naive": "gemm_torch",
        "torch": "gemm_torch",
        "triton": "gemm_triton",
    }
    key = aliases.get(key, key)
    try:
        return Kernel(key)
    except ValueError:
        known = ", ".join(k.value for k in Kernel)
        raise UnknownVersionError(f"unknown AWQ kernel version {name!r}: expected one of {known}, or 'auto'") from None


def get_spec(kernel: str | Kernel) -> KernelSpec:
    """The catalogue entry for a kernel version (by name or :class:`Kernel`)."""
    return CATALOGUE[parse_kernel(kernel)]
