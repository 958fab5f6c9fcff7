"""llama.cpp's own quantizer: the k-quant files (Q4_K_M, Q5_K_M, Q6_K) and Q8_0 that local
runners load, through llama-cpp-python (an optional extra: ``pip install 'quail_repro[llamacpp]'``,
a source build of llama.cpp; scripts/setup_llamacpp.sh).

The saved model is exported to GGUF in float32 (architecture and tokenizer metadata included,
so llama.cpp can load it), quantized by llama.cpp's ``llama_model_quantize`` to the file type
asked for, and every tensor of the quantized file is read back with the gguf package's
dequantizers into the harness's model, which the metrics then run on. What llama.cpp decides is
kept as it decides it:

* the mix of tensor types of a file type (Q4_K_M stores attn_v and ffn_down of some layers and
  the output head in Q6_K, the rest in Q4_K);
* the output head and the token embeddings are quantized too (the other quantizers of the
  harness keep them in full precision), as every GGUF runner loads them;
* k-quants cut rows into super-blocks of 256 weights: a row of another length gets llama.cpp's
  fallback type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0). At the embedded default's width 192
  most matrices fall back; ``tensor_types`` of the loaded model says which type each got.

Llama-architecture causal LMs only (what llama.cpp's LLAMA graph runs); anything else is a
ConfigError, recorded as that precision's failure.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import tempfile
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quail_repro.errors import ConfigError, QuantizerUnavailable

from .base import Quantizer, check_int, check_name, load_full_precision
from .gguf import _gguf, _gguf_version, codes_on_grid

log = logging.getLogger(__name__)
EXTRA = "bash scripts/setup_llamacpp.sh (pip install 'quail_repro[llamacpp]' builds it for this CPU only)"
#: the file types offered, by llama.cpp's names (LLAMA_FTYPE_MOSTLY_<name>)
FTYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0", "Q4_0", "Q5_0")


_GGML_LOG_ERROR = 4  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise QuantizerUnavailable(f"llama.cpp's quantizer needs llama-cpp-python, which is not installed ({err}); "
                                   f"install the extra: {EXTRA}") from None
    if not hasattr(import_llama_cpp, "_log"):  # llama.cpp prints a line per tensor: keep its errors only
        @llama_cpp.llama_log_callback
        def _log(level, text, _user_data):
            if level == _GGML_LOG_ERROR:
                log.error("llama.cpp: %s", text.decode(errors="replace").rstrip())

        import_llama_cpp._log = _log  # the C side holds a pointer: keep the callback alive
        llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
    return llama_cpp


def llama_cpp_version() -> str:
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "not installed"


# -- export -------------------------------------------------------------------------------------


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}  # transformers 5 keeps it here
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    rope_type = params.get("rope_type", "default")
    if theta is None or rope_type != "default":
        raise ConfigError(f"GGUF export: RoPE {rope_type!r} (theta {theta}) is not exported; plain RoPE only")
    return float(theta)


def _check_llama(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama" or not hasattr(model, "lm_head"):
        kind = getattr(config, "model_type", type(model).__name__)
        raise ConfigError(f"llama.cpp's quantizer runs Llama causal LMs only here; this model is {kind!r}")


def _permute(w: np.ndarray, n_head: int, inverse: bool = False) -> np.ndarray:
    """HF Llama rotates each head's halves (x_i, x_{i+d/2}); llama.cpp's LLAMA graph rotates
    adjacent pairs (x_2i, x_2i+1): q and k rows are reordered on export (as llama.cpp's
    convert_hf_to_gguf.py does) and back on reading. A reordering of rows leaves each row, and so
    its quantized blocks, unchanged."""
    rows = w.shape[0]
    if inverse:
        return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _heads(config, hf_name: str) -> int | None:
    if hf_name.endswith("self_attn.q_proj.weight"):
        return config.num_attention_heads
    if hf_name.endswith("self_attn.k_proj.weight"):
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return None


def _name_map(model: nn.Module) -> dict[str, str]:
    """HF parameter name -> GGUF tensor name, by the gguf package's own table."""
    gguf = _gguf()
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    names = {}
    for name in model.state_dict():
        if name == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False):
            continue  # llama.cpp reads a tied head from token_embd
        mapped = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ConfigError(f"GGUF export: no llama.cpp tensor for {name!r}")
        names[name] = mapped
    return names


def _write_tokenizer(writer, tokenizer_dir: str) -> None:
    """The byte-level BPE's tokens and merges as llama.cpp's "gpt2" vocabulary."""
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    state = json.loads(tok.backend_tokenizer.to_str())
    model = state["model"]
    if model.get("type") != "BPE":
        raise ConfigError(f"GGUF export: tokenizer type {model.get('type')!r}; byte-level BPE only")
    vocab = {i: t for t, i in tok.get_vocab().items()}
    gguf = _gguf()
    special = set(tok.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([vocab[i] for i in range(len(vocab))])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(vocab))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for what, token_id in (("bos", tok.bos_token_id), ("eos", tok.eos_token_id), ("pad", tok.pad_token_id),
                           ("unk", tok.unk_token_id)):
        if token_id is not None:
            getattr(writer, f"add_{what}_token_id")(token_id)
    writer.add_add_bos_token(False)  # the harness tokenizes; llama.cpp gets token ids


def export_gguf(model: nn.Module, tokenizer_dir: str, path: str | Path) -> Path:
    """``model`` (a Llama causal LM) as a float32 GGUF file that llama.cpp loads."""
    _check_llama(model)
    gguf, config = _gguf(), model.config
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file at INFO
    n_head = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _write_tokenizer(writer, tokenizer_dir)
    names = _name_map(model)
    for name, tensor in model.state_dict().items():
        if name not in names:
            continue
        w = tensor.detach().float().cpu().numpy()
        heads = _heads(config, name)
        writer.add_tensor(names[name], _permute(w, heads) if heads else w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


# -- quantize, read back ------------------------------------------------------------------------


def quantize_gguf(source: str | Path, dest: str | Path, ftype: str, threads: int) -> None:
    """llama.cpp's ``llama_model_quantize`` of ``source`` into ``dest`` at file type ``ftype``."""
    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0:
        raise QuantizerUnavailable(f"llama_model_quantize to {ftype} failed (return code {rc}); see llama.cpp's log")


def read_gguf(path: str | Path, model: nn.Module) -> dict[str, tuple[str, np.ndarray]]:
    """HF parameter name -> (the GGUF tensor's type name, its float32 values in HF's layout)."""
    gguf = _gguf()
    back = {g: h for h, g in _name_map(model).items()}
    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name not in back:
            raise ConfigError(f"{path}: tensor {t.name!r} has no counterpart in the model")
        values = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)  # a copy, not the memmap
        hf = back[t.name]
        heads = _heads(model.config, hf)
        out[hf] = (t.tensor_type.name, _permute(values, heads, inverse=True) if heads else values)
    return out


#: the type a file type stores most weights in, and llama.cpp's fallback where a row is not a
#: whole number of 256-weight super-blocks (llama-quant.cpp)
BASE_TYPE = {"Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K", "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K", "Q6_K": "Q6_K",
             "Q8_0": "Q8_0", "Q4_0": "Q4_0", "Q5_0": "Q5_0"}
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def row_type(ftype: str, row_length: int) -> str:
    """The type llama.cpp gives a weight of this row length at ``ftype``'s base type."""
    gguf = _gguf()

    def fits(kind: str) -> bool:
        return row_length % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]][0] == 0

    kind = BASE_TYPE[ftype] if fits(BASE_TYPE[ftype]) else FALLBACK.get(BASE_TYPE[ftype], BASE_TYPE[ftype])
    if not fits(kind):
        raise ConfigError(f"{ftype}: rows of {row_length} weights fit no block of {kind}")
    return kind


@functools.cache
def _ggml_base() -> ctypes.CDLL:
    """llama-cpp-python's libggml-base, with ggml_quantize_chunk's signature declared."""
    lib = ctypes.CDLL(str(Path(import_llama_cpp().__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return lib


def ggml_round_trip(weight: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """One 2-D float32 weight through ggml's own quantizer (ggml_quantize_chunk, the function
    llama_model_quantize calls for each tensor): (its bytes, rows x bytes; its values)."""
    gguf, lib = _gguf(), _ggml_base()
    qtype = gguf.GGMLQuantizationType[kind]
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    src = np.ascontiguousarray(weight, dtype=np.float32)
    rows, n_per_row = src.shape
    raw = np.empty((rows, n_per_row // block * type_size), dtype=np.uint8)
    lib.ggml_quantize_init(int(qtype))
    written = lib.ggml_quantize_chunk(int(qtype), src.ctypes.data, raw.ctypes.data, 0, rows, n_per_row, None)
    if written != raw.nbytes:
        raise QuantizerUnavailable(f"ggml_quantize_chunk wrote {written} bytes of {kind}, expected {raw.nbytes}")
    return raw, np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32)


class LlamaCppQuantizer(Quantizer):
    """llama.cpp's quantization to ``ftype`` (see the module doc).

    Config::

        _target_: quail_repro.quant.llama_cpp.LlamaCppQuantizer
        name: gguf_q4_k_m
        ftype: Q4_K_M     # Q4_K_M | Q4_K_S | Q5_K_M | Q5_K_S | Q6_K | Q8_0 | Q4_0 | Q5_0
        threads: 2        # llama.cpp's quantization threads (rows are independent: no number changes)
    """

    def __init__(self, name: str, ftype: str, threads: int):
        self.name = check_name("LlamaCppQuantizer", name)
        if ftype not in FTYPES:
            raise ConfigError(f"LlamaCppQuantizer option 'ftype'={ftype!r}: choose one of {list(FTYPES)}")
        if check_int("LlamaCppQuantizer", "threads", threads) < 1:
            raise ConfigError(f"LlamaCppQuantizer option 'threads' must be an integer >= 1, got {threads!r}")
        self.ftype, self.threads = ftype, threads
        #: per parameter, the type llama.cpp stored it in (set by the last load)
        self.tensor_types: dict[str, str] = {}

    def quantize_file(self, path: str, model: nn.Module, folder: str | Path) -> Path:
        """``model`` (saved at ``path``, tokenizer beside it) exported to GGUF and quantized by
        llama.cpp into ``folder``: the path of the quantized file."""
        _check_llama(model)
        import_llama_cpp()  # before the export: a missing extra fails in a second
        source, dest = Path(folder) / "model-f32.gguf", Path(folder) / f"model-{self.ftype}.gguf"
        export_gguf(model, path, source)
        quantize_gguf(source, dest, self.ftype, self.threads)
        return dest

    def load_file(self, gguf_path: str | Path, model: nn.Module, *, dtype: torch.dtype, device: str) -> nn.Module:
        """``model`` with every tensor of the quantized file ``gguf_path`` read back into it."""
        tensors = read_gguf(gguf_path, model)
        state = model.state_dict()
        with torch.no_grad():
            for name, (_, values) in tensors.items():
                state[name].copy_(torch.from_numpy(values).reshape(state[name].shape))
        self.tensor_types = {name: kind for name, (kind, _) in tensors.items()}
        counts = Counter(self.tensor_types.values())
        log.info("%s: llama.cpp stored %s", self.name, ", ".join(f"{n} tensors in {k}" for k, n in sorted(counts.items())))
        model.to(device=device, dtype=dtype)
        return model.eval()

    def load(self, path: str, *, dtype: torch.dtype, device: str) -> nn.Module:
        model = load_full_precision(path, dtype=torch.float32, device="cpu")
        with tempfile.TemporaryDirectory(prefix="quail_gguf_") as tmp:
            return self.load_file(self.quantize_file(path, model, tmp), model, dtype=dtype, device=device)

    def bucket_codes(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes, dequantized values, step Delta, the code nearest 0) per weight, for the bucket
        analysis: the weight through ggml's quantizer at the file type's base type (row_type). The
        file itself stores a few tensors at more bits (Q4_K_M: attn_v and ffn_down of some layers
        in Q6_K); the analysis treats every Linear at the base type."""
        kind = row_type(self.ftype, weight.shape[1])
        raw, values = ggml_round_trip(weight.detach().float().cpu().numpy(), kind)
        return codes_on_grid(kind, raw, values, weight)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "method": "llama.cpp", "ftype": self.ftype, "llama_cpp_python": llama_cpp_version(),
                "gguf": _gguf_version(), "modules": "every tensor, as llama.cpp stores it (embeddings and head included)",
                "analysis": f"every Linear at {BASE_TYPE[self.ftype]} (llama.cpp's fallback where rows do not fit)"}
