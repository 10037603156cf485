"""The checkpoint's generation config, built the way transformers' ``from_pretrained`` builds it.

AutoAWQ's ``from_quantized`` makes the model with ``from_config``, whose ``generation_config`` comes from
config.json alone: ``generation_config.json`` (end-of-sequence lists such as Llama-3-Instruct's
``[128001, 128008, 128009]``, ``do_sample``, ``temperature``, ``top_p``, ``repetition_penalty``,
``max_new_tokens``, ...) would be lost. transformers 5's ``from_pretrained`` reads that file with
``GenerationConfig.from_pretrained``; when the file is missing or is not JSON (an ``OSError`` there) it builds the
config from config.json's dict instead (``GenerationConfig.from_model_config``); any other error (a file that is
JSON but not an object, a value ``GenerationConfig`` refuses) fails the load. This module does the same, except
that a generation_config.json it falls back from is named in a
:class:`~awq_autoselect.errors.CheckpointWarning` (transformers only logs it), and an end-of-sequence or padding id
that is no token id is refused here, before loading, instead of failing at the first ``generate``.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, NamedTuple

from awq_autoselect.errors import CheckpointWarning, CorruptCheckpointError

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from awq_autoselect.checkpoint import CheckpointInfo

__all__ = ["GENERATION_CONFIG", "CheckpointGeneration", "checkpoint_generation_config"]

logger = logging.getLogger(__name__)

#: The file transformers writes a model's generation settings to.
GENERATION_CONFIG = "generation_config.json"


class CheckpointGeneration(NamedTuple):
    """A checkpoint's generation config and the file it was built from."""

    config: GenerationConfig
    source: str  # "generation_config.json" or "config.json"


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_token_ids(config: GenerationConfig, file: str) -> None:
    """Refuse end-of-sequence and padding ids that are no token ids (transformers accepts them until generate)."""
    eos = config.eos_token_id
    if eos is not None and not (_is_token_id(eos) or (isinstance(eos, list) and all(_is_token_id(e) for e in eos))):
        raise CorruptCheckpointError(
            f"{file}: eos_token_id={eos!r} ({type(eos).__name__}) is not a token id or a list of token ids: "
            'write it as a number or a list of numbers, e.g. "eos_token_id": [2, 32000]'
        )
    pad = config.pad_token_id
    if pad is not None and not _is_token_id(pad):
        raise CorruptCheckpointError(
            f"{file}: pad_token_id={pad!r} ({type(pad).__name__}) is not a token id: write it as a number, "
            'e.g. "pad_token_id": 0, or remove it'
        )


def checkpoint_generation_config(info: CheckpointInfo) -> CheckpointGeneration:
    """The generation config ``from_pretrained`` would give a model of this checkpoint, and its source.

    Reads ``generation_config.json`` when the checkpoint has one, else config.json (already read into
    ``info.config``). Writes nothing.

    Warns:
        CheckpointWarning: generation_config.json cannot be read or is not JSON; the config comes from config.json
            (as transformers' ``from_pretrained`` does, silently).

    Raises:
        CorruptCheckpointError: generation_config.json is JSON but not a generation config transformers accepts
            (``from_pretrained`` would fail too), or an end-of-sequence or padding id is no token id.
    """
    from transformers import GenerationConfig

    file = info.path / GENERATION_CONFIG
    if file.is_file():
        try:
            config = GenerationConfig.from_pretrained(str(info.path), local_files_only=True)
        except OSError as exc:
            warnings.warn(
                f"{file} cannot be read ({' '.join(str(exc).split())}): generating with the settings config.json "
                "implies (end-of-sequence id, ...), as transformers' from_pretrained does; fix or delete the file",
                CheckpointWarning,
                stacklevel=3,
            )
        except (TypeError, ValueError) as exc:  # what GenerationConfig raises for a value it refuses
            raise CorruptCheckpointError(
                f"{file}: not a generation config transformers accepts ({' '.join(str(exc).split())}); fix or "
                "delete the file (transformers' from_pretrained fails on it too)"
            ) from exc
        else:
            _check_token_ids(config, str(file))
            logger.debug("generation config from %s: %s", file, config.to_diff_dict())
            return CheckpointGeneration(config, GENERATION_CONFIG)
    # from_model_config drops a "_from_model_config" key from the dict it is given: give it a copy.
    config = GenerationConfig.from_model_config(dict(info.config))
    _check_token_ids(config, str(info.path / "config.json"))
    return CheckpointGeneration(config, "config.json")
