"""The Modal path offline: the real function body via ``.local()``, the service calling the deployed
function by name, and every way Modal can fail ending in a local conversion that records why."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modal.exception as mex
import pytest

from app.convert import ConversionFailure, ConvertOptions, convert_batch, convert_file
from app.convert.backends import APP_NAME, CLASS_NAME, modal_breaker
from app.convert.modal_client import ModalItem, call_modal
from app.convert.sniff import PDF, sniff_path
from app.modal_app import Converter
from tests.conftest import CORPUS
from tests.modal_standin import deploy

__all__ = ["deploy"]  # the fixture

pytestmark = pytest.mark.local_models

ROOT = Path(__file__).resolve().parent.parent
MULTI = CORPUS / "pdf" / "multi_page.pdf"
DOCX = CORPUS / "docx" / "word_sample.docx"
MODAL = ConvertOptions(backend="modal")


@pytest.fixture(autouse=True)
def fresh_breaker() -> Iterator[None]:
    modal_breaker.reset()
    yield
    modal_breaker.reset()


def test_import_needs_no_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), CHRONOS_MODAL_GPU="L4")
    code = "import app.modal_app as m; print(m.app.name, m.GPU, m.DOCLING_REQUIREMENT)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name, gpu, requirement = done.stdout.split()
    assert (name, gpu) == ("chronos-docling", "L4") and requirement.startswith("docling==")
    env["CHRONOS_MODAL_GPU"] = "H1000"
    bad = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "CHRONOS_MODAL_GPU" in bad.stderr


def test_function_body_runs_with_local_docling() -> None:
    items = [
        {"filename": "a.pdf", "media_type": PDF, "data": MULTI.read_bytes(), "pipeline": "default"},
        {"filename": "b.docx", "media_type": sniff_path(DOCX), "data": DOCX.read_bytes(), "pipeline": "default"},
        {
            "filename": "locked.pdf",
            "media_type": PDF,
            "pipeline": "default",
            "data": (CORPUS / "pdf" / "password_protected_2206.01062_pg3.pdf").read_bytes(),
        },
        {"filename": "c.pdf", "media_type": PDF, "data": MULTI.read_bytes(), "page_range": [2, 3]},
    ]
    reply = Converter(device="cpu").convert.local(items, None)  # type: ignore[call-arg]
    results = reply["results"]
    assert len(results) == 4
    pdf, docx, locked, part = results
    assert pdf["ok"] and pdf["page_count"] == 5 and pdf["pipeline"] == "native" and pdf["markdown"].strip()
    assert pdf["docling_json"].startswith(b"{") and pdf["convert_s"] > 0
    assert pdf["usage"]["container_s"] >= pdf["convert_s"] and pdf["usage"]["started_container"]
    # The container reports the deployment's GPU and the device it really converted on.
    assert reply["container"]["gpu"] == "A10G" and reply["container"]["device"] == "cpu"
    assert docx["ok"] and docx["pipeline"] == "simple" and docx["markdown"].strip()
    assert not locked["ok"] and locked["failure"]["error_class"] == "PasswordProtected"
    assert part["ok"] and part["page_count"] == 2 and part["page_range"] == [2, 3]


async def test_service_calls_the_deployed_function_by_name(deploy: Any) -> None:
    fake = deploy()
    results = await convert_batch(
        [
            (MULTI, "a.pdf", PDF),
            (MULTI, "b.pdf", PDF),
            (DOCX, "b.docx", sniff_path(DOCX)),
            (CORPUS / "md" / "duck.md", "duck.md", "text/markdown"),
        ],
        MODAL,
    )
    assert fake.looked_up and set(fake.looked_up) == {(APP_NAME, CLASS_NAME)}
    assert fake.documents_sent == [2]  # the two PDFs in one call (one container start); the rest local
    assert fake.calls[0].items[0]["data"] == MULTI.read_bytes()
    pdf_a, pdf_b, docx, md = results
    for out in (pdf_a, pdf_b):
        assert not isinstance(out, ConversionFailure)
        assert out.backend == "modal" and out.fallback is None and out.gpu == "A10G" and out.gpu_s > 0
        assert out.cpu_s == 0.0 and out.markdown.strip() and out.page_count == 5
        [usage] = out.modal_usage
        assert usage.batch_documents == 2 and usage.started_container
    for out in (docx, md):
        assert not isinstance(out, ConversionFailure)
        assert out.backend == "local" and out.fallback is None and not out.modal_usage


async def test_input_failures_on_modal_are_not_fallbacks(deploy: Any) -> None:
    deploy()
    with pytest.raises(ConversionFailure) as info:
        await convert_file(
            CORPUS / "pdf" / "password_protected_2206.01062_pg3.pdf", filename="x.pdf", media_type=PDF, options=MODAL
        )
    assert info.value.error_class == "PasswordProtected" and info.value.backend == "modal"
    assert info.value.modal_usage and info.value.modal_usage[0].container_s > 0  # the failure was billed


def raising(exc: BaseException) -> Any:
    def behaviour(items: list[dict[str, Any]], deadline: float | None) -> Any:
        raise exc

    return behaviour


@pytest.mark.parametrize(
    ("exc", "reason", "words"),
    [
        (mex.AuthError("Token missing. Could not authenticate client."), "unauthenticated", "MODAL_TOKEN_ID"),
        (mex.PermissionDeniedError("workspace access denied"), "unauthenticated", "credentials"),
        (mex.ConnectionError("Could not connect to the Modal server."), "unreachable", "could not reach"),
        (mex.FunctionTimeoutError("Function timed out after 600s"), "timeout", "timed out"),
        (mex.NotFoundError("App 'chronos-docling' not found"), "error", "modal deploy app/modal_app.py"),
        (mex.InternalError("internal failure"), "error", "failed"),
    ],
    ids=["auth", "permission", "outage", "function-timeout", "not-deployed", "internal"],
)
async def test_modal_failures_fall_back_to_local(deploy: Any, exc: BaseException, reason: str, words: str) -> None:
    deploy(raising(exc))
    out = await convert_file(MULTI, filename="a.pdf", media_type=PDF, options=MODAL)
    assert out.backend == "local" and out.page_count == 5 and out.markdown.strip()
    assert out.fallback is not None
    assert out.fallback["from_backend"] == "modal" and out.fallback["reason"] == reason
    assert words in out.fallback["message"]


async def test_a_slow_modal_call_times_out_and_falls_back(deploy: Any) -> None:
    async def hang(items: list[dict[str, Any]], deadline: float | None) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {}

    fake = deploy(hang)
    options = ConvertOptions(backend="modal", modal_timeout_s=0.3)
    out = await convert_file(MULTI, filename="a.pdf", media_type=PDF, options=options)
    assert out.backend == "local" and out.fallback is not None and out.fallback["reason"] == "timeout"
    assert fake.calls[0].cancelled_with == {"terminate_containers": True}  # cancelled, not left billing


async def test_an_outage_is_remembered_for_a_while(deploy: Any) -> None:
    fake = deploy(raising(mex.ConnectionError("Could not connect to the Modal server.")))
    first = await convert_file(MULTI, filename="a.pdf", media_type=PDF, options=MODAL)
    second = await convert_file(MULTI, filename="b.pdf", media_type=PDF, options=MODAL)
    assert len(fake.calls) == 1  # the second document did not wait for Modal again
    assert first.fallback and second.fallback
    assert second.fallback["reason"] == "unreachable" and "not retried" in second.fallback["message"]


async def test_real_modal_client_without_credentials_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No fake: the real modal client, no token, refuses at once.
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    out = await convert_file(MULTI, filename="a.pdf", media_type=PDF, options=MODAL)
    assert out.backend == "local" and out.fallback is not None
    assert out.fallback["reason"] == "unauthenticated" and "Token missing" in out.fallback["message"]


def test_auto_backend_follows_modal_credentials() -> None:
    assert ConvertOptions().resolved_backend({}) == "local"
    assert ConvertOptions().resolved_backend({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"}) == "modal"
    assert (
        ConvertOptions(backend="local").resolved_backend({"MODAL_TOKEN_ID": "a", "MODAL_TOKEN_SECRET": "b"}) == "local"
    )
    a, b = ConvertOptions(backend="modal"), ConvertOptions(backend="local", timeout_s=5)
    assert a.settings_hash() == b.settings_hash()  # where it ran does not change the output
    assert ConvertOptions(pipeline="standard").settings_hash() != a.settings_hash()
    with pytest.raises(ValueError, match="GPU"):
        ConvertOptions(gpu="H1000")


async def test_a_lookup_that_hangs_is_unreachable_and_trips_the_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Modal client retries a dead server by itself: the lookup has its own short limit, so an
    outage is reported as unreachable (and the breaker opens) instead of waiting out the whole call."""
    import app.convert.modal_client as client

    class Hanging:
        class hydrate:  # mirrors modal: `cls.hydrate.aio()`
            @staticmethod
            async def aio() -> None:
                await asyncio.sleep(3600)

    monkeypatch.setattr(client, "_lookup_class", lambda: Hanging())
    monkeypatch.setattr(client, "MODAL_CONNECT_TIMEOUT_S", 0.2)
    [outcome] = await call_modal([ModalItem(MULTI, "m.pdf", PDF, "default")], 600.0)
    assert isinstance(outcome, client.ModalUnavailable)
    assert outcome.reason == "unreachable" and "could not reach Modal" in str(outcome)
    assert modal_breaker.error is not None and modal_breaker.error.reason == "unreachable"
