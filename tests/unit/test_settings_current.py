"""config.current(): the environment's settings are parsed once per distinct environment, not per call,
and a changed variable is still seen at the next call."""

from __future__ import annotations

import pytest

from app import config


def _count_from_env(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = config.Settings.from_env.__func__  # type: ignore[attr-defined]

    def counting(cls: type[config.Settings], env: dict[str, str] | None = None) -> config.Settings:
        calls[0] += 1
        return original(cls, env)

    monkeypatch.setattr(config.Settings, "from_env", classmethod(counting))
    return calls


def test_environment_is_parsed_once_for_repeated_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = config.use(None)
    try:
        monkeypatch.setenv("CHRONOS_EMBED_JOBS", "3")
        calls = _count_from_env(monkeypatch)
        first = config.current()
        for _ in range(50):
            assert config.current() is first
        assert first.embed_jobs == 3
        assert calls[0] <= 1
    finally:
        config.use(previous)


def test_a_changed_variable_is_seen_at_the_next_call(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = config.use(None)
    try:
        monkeypatch.setenv("CHRONOS_EMBED_JOBS", "3")
        assert config.current().embed_jobs == 3
        monkeypatch.setenv("CHRONOS_EMBED_JOBS", "5")
        assert config.current().embed_jobs == 5
        monkeypatch.delenv("CHRONOS_EMBED_JOBS")
        assert config.current().embed_jobs == config.Settings.embed_jobs
        monkeypatch.setenv("CHRONOS_PRICE_TEST_MODEL", "0.5")
        assert ("CHRONOS_PRICE_TEST_MODEL", 0.5) in config.current().price_overrides
        monkeypatch.setenv("CHRONOS_EMBED_JOBS", "not a number")
        with pytest.raises(config.ConfigError):
            config.current()
        with pytest.raises(config.ConfigError):
            config.current()
    finally:
        config.use(previous)


def test_settings_made_current_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = config.Settings(embed_jobs=7)
    previous = config.use(chosen)
    try:
        monkeypatch.setenv("CHRONOS_EMBED_JOBS", "2")
        assert config.current() is chosen
    finally:
        config.use(previous)
