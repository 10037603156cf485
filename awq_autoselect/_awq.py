"""AutoAWQ itself: importing it without side effects on the caller's process, and its model wrapper.

``import awq`` (0.2.9) calls ``warnings.simplefilter("default", DeprecationWarning)`` — replacing the
caller's own warning configuration for every DeprecationWarning in the process — and then warns that AutoAWQ is
deprecated; importing it also triggers deprecation warnings from torch and transformers about APIs AutoAWQ uses
(e.g. ``torch.jit.script``). None of these is actionable for a user of awq_autoselect, which pins AutoAWQ 0.2.9
on purpose (README). We import it once under ``warnings.catch_warnings(record=True)``, which restores the
caller's filters afterwards, and log what was silenced at debug level.
"""

from __future__ import annotations

import logging
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

__all__ = ["hf_model_of", "import_awq"]

logger = logging.getLogger(__name__)


def import_awq() -> ModuleType:
    """Import and return the ``awq`` package, leaving the warning filters as they were."""
    loaded = sys.modules.get("awq")
    if loaded is not None:
        return loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # record, never raise: a caller's "error" filter must not break the import
        import awq as module
    for item in caught:
        first_line = next((line for line in str(item.message).splitlines() if line.strip()), "")
        logger.debug("silenced while importing awq: %s: %s", item.category.__name__, first_line)
    return cast(ModuleType, module)


def hf_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside AutoAWQ's wrapper (``BaseAWQForCausalLM.model``), or ``model`` itself.

    The wrapper's own ``forward`` only forwards; decoding, probing and benchmarking talk to the model inside.
    """
    from transformers import PreTrainedModel

    inner = getattr(model, "model", None)
    if not isinstance(model, PreTrainedModel) and isinstance(inner, PreTrainedModel):
        return inner
    return model
