"""Reading a Modal deployment definition offline, with Modal's own objects (Modal 1.6.4): the image's
layers in build order, the build functions with the files Modal mounts for them, the class's
resources and autoscaler settings. Used by tests/test_modal_deploy.py; nothing here reaches Modal."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from modal._utils.async_utils import synchronizer
from modal_proto import api_pb2

BUILDER_VERSION = "2025.06"


@dataclass
class Layer:
    kind: str  # "debian_slim" | "apt_install" | "pip_install" | "env" | "run_function" | "local files"
    commands: list[str] = field(default_factory=list)
    function: str | None = None  # run_function: the build function's name
    module: str | None = None  # ... the module the build container imports it from
    files: list[tuple[str, str]] = field(default_factory=list)  # ... (local path, path in the container)
    gpu: Any = None


def _closure(fn: Any) -> list[Any]:
    values = []
    for cell in getattr(fn, "__closure__", None) or []:
        try:
            values.append(cell.cell_contents)
        except ValueError:
            continue
    return values


def layers(image: Any) -> list[Layer]:
    """The image's layers, base first (``image`` is a ``modal.Image``)."""
    out: list[Layer] = []
    current = synchronizer._translate_in(image)
    while current is not None:
        deps = list(current._deps_())
        base = next((d for d in deps if type(d).__name__ == "_Image"), None)
        build = next((d for d in deps if type(d).__name__ == "_Function"), None)
        dockerfiles = [
            v for v in _closure(current._load) if callable(v) and getattr(v, "__name__", "") == "build_dockerfile"
        ]
        if current._rep == "Image(local files)":
            layer = Layer("local files")
        elif build is not None:
            info = build._source_info
            files = [
                (str(local), str(PurePosixPath(remote)))
                for mount in build._spec.mounts
                if _is_local(mount)
                for entry in mount.entries
                for local, remote in entry.get_files_to_upload()
            ]
            layer = Layer(
                "run_function", function=info.function_name, module=info.module_name, files=files, gpu=build._spec.gpus
            )
        elif dockerfiles:
            qualname = dockerfiles[0].__qualname__  # e.g. "_Image.pip_install.<locals>.build_dockerfile"
            layer = Layer(qualname.split(".")[1], commands=list(dockerfiles[0](BUILDER_VERSION).commands))
        else:
            layer = Layer(current._rep)
        out.append(layer)
        current = base
    return list(reversed(out))


def _is_local(mount: Any) -> bool:
    try:
        return bool(mount.entries)
    except Exception:  # the client mount (Modal's own package) has no local entries
        return False


def service_function(cls: Any) -> Any:
    """The ``_Function`` serving every method of a ``modal.Cls`` defined locally."""
    return synchronizer._translate_in(cls)._get_class_service_function()


def function_info(cls: Any) -> Any:
    """Modal's ``FunctionInfo`` for the class (GPU, cpu, memory, timeout), as ``Function.info()`` gives."""
    return asyncio.run(service_function(cls).info())


def autoscaler(cls: Any) -> api_pb2.AutoscalerSettings:
    """The ``AutoscalerSettings`` Modal sends when it creates the function (max_containers, scaledown)."""
    for value in _closure(service_function(cls)._load):
        if isinstance(value, api_pb2.AutoscalerSettings):
            return value
    raise AssertionError("no AutoscalerSettings in the function definition (Modal's internals changed?)")


def secret_env(cls: Any) -> dict[str, str | None]:
    """The environment the class's containers get from ``env=`` (a ``Secret.from_dict``)."""
    env: dict[str, str | None] = {}
    for secret in service_function(cls)._spec.secrets:
        for loader in _closure(secret._load):  # Secret.from_dict: _load -> _load_env_dict() -> the dict
            if callable(loader) and loader.__name__ == "_load_env_dict":
                env.update(loader())
    return env
