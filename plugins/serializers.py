"""Built-in serializers: JSON, bytes, NumPy, pandas, files, folders, and pickle as the fallback.

NumPy and pandas are imported only when a value of theirs is stored or loaded, so pipekit
itself never needs them. Registered through ``pipekit_serializers`` like any plugin.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import IO, Any

import pipekit
from pipekit.artifacts import Serializer

_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_plain_json(value: Any, depth: int = 0) -> bool:
    """True when ``value`` survives a JSON round trip unchanged (no tuples, int keys, NaN)."""
    if depth > 64:
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if type(value) in _JSON_SCALARS:
        return True
    if type(value) is list:
        return all(_is_plain_json(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain_json(v, depth + 1) for k, v in value.items())
    return False


class JsonSerializer(Serializer):
    name = "json"
    extension = ".json"

    def accepts(self, value: Any) -> bool:
        return _is_plain_json(value)

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        fp.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    def load(self, fp: IO[bytes]) -> Any:
        return json.loads(fp.read())


class BytesSerializer(Serializer):
    name = "bytes"
    extension = ".bin"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (bytes, bytearray, memoryview))

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        fp.write(value)

    def load(self, fp: IO[bytes]) -> Any:
        return fp.read()

    def preview(self, value: Any) -> str:
        return f"{len(value)} bytes"


class NumpySerializer(Serializer):
    name = "numpy"
    extension = ".npy"

    def accepts(self, value: Any) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and isinstance(value, np.ndarray) and not value.dtype.hasobject

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        import numpy as np

        np.save(fp, value, allow_pickle=False)

    def load(self, fp: IO[bytes]) -> Any:
        import numpy as np

        return np.load(fp, allow_pickle=False)

    def preview(self, value: Any) -> str:
        return f"ndarray shape={value.shape} dtype={value.dtype}"


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


class PandasParquetSerializer(Serializer):
    name = "pandas.parquet"
    extension = ".parquet"

    def accepts(self, value: Any) -> bool:
        pd = sys.modules.get("pandas")
        return pd is not None and isinstance(value, pd.DataFrame) and _has_pyarrow()

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        value.to_parquet(fp)

    def load(self, fp: IO[bytes]) -> Any:
        import pandas as pd

        return pd.read_parquet(fp)

    def preview(self, value: Any) -> str:
        return f"DataFrame {value.shape[0]} rows x {value.shape[1]} columns: " + \
            ", ".join(map(str, list(value.columns)[:10]))


class FileSerializer(Serializer):
    """A local file, stored byte for byte; ``get()`` returns the path of a local copy."""

    name = "file"
    returns_path = True

    def accepts(self, value: Any) -> bool:
        return _is_local_path(value) and Path(value).is_file()

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        with open(value, "rb") as src:
            shutil.copyfileobj(src, fp, 1024 * 1024)

    def load(self, fp: IO[bytes]) -> Any:  # pragma: no cover - returns_path: never called
        raise NotImplementedError

    def filename(self, value: Any, name: str) -> str:
        return Path(value).name

    def preview(self, value: Any) -> str:
        return f"file {Path(value).name} ({os.path.getsize(value)} bytes)"


class FolderSerializer(Serializer):
    """A local folder, stored as a deterministic zip (same content, same digest)."""

    name = "folder"
    extension = ".zip"
    returns_path = True

    def accepts(self, value: Any) -> bool:
        return _is_local_path(value) and Path(value).is_dir()

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        root = Path(value)
        with zipfile.ZipFile(fp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root).as_posix()
                if path.is_dir():
                    info = zipfile.ZipInfo(rel + "/", date_time=(1980, 1, 1, 0, 0, 0))
                    zf.writestr(info, b"")
                elif path.is_file():
                    info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = (path.stat().st_mode & 0o777) << 16
                    with open(path, "rb") as src, zf.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst, 1024 * 1024)

    def load(self, fp: IO[bytes]) -> Any:  # pragma: no cover - returns_path: never called
        raise NotImplementedError

    def filename(self, value: Any, name: str) -> str:
        return Path(value).resolve().name or name

    def unpack(self, obj: Path, dest: Path) -> Path:
        dest.mkdir(mode=0o700)
        with zipfile.ZipFile(obj) as zf:
            for member in zf.namelist():
                target = (dest / member).resolve()
                if not target.is_relative_to(dest.resolve()):
                    raise ValueError(f"zip member {member!r} escapes the folder")
            zf.extractall(dest)
        return dest

    def preview(self, value: Any) -> str:
        count = sum(1 for p in Path(value).rglob("*") if p.is_file())
        return f"folder {Path(value).resolve().name} ({count} files)"


class PickleSerializer(Serializer):
    """Anything else, with cloudpickle (protocol 5); loading runs code, so the digest is
    always verified first.
    """

    name = "pickle"
    priority = -1000
    extension = ".pkl"

    def accepts(self, value: Any) -> bool:
        return True

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        import cloudpickle

        cloudpickle.dump(value, fp, protocol=5)

    def load(self, fp: IO[bytes]) -> Any:
        return pickle.load(fp)


def _is_local_path(value: Any) -> bool:
    """Only a path object names a file or folder: a string is data (``Task.upload_artifact``
    turns a string naming a path into a path first, as ClearML does).
    """
    return isinstance(value, os.PathLike)


class PandasPickleSerializer(PickleSerializer):
    """pandas objects when pyarrow is missing (and Series, which Parquet does not hold)."""

    name = "pandas.pickle"
    priority = -10

    def accepts(self, value: Any) -> bool:
        pd = sys.modules.get("pandas")
        return pd is not None and isinstance(value, (pd.DataFrame, pd.Series))

    def preview(self, value: Any) -> str:
        return f"{type(value).__name__} shape={getattr(value, 'shape', '?')}"


@pipekit.hookimpl
def pipekit_serializers(register: Any) -> None:
    for cls in (JsonSerializer, BytesSerializer, NumpySerializer, PandasParquetSerializer,
                PandasPickleSerializer, FileSerializer, FolderSerializer, PickleSerializer):
        register(cls())
