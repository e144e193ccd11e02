from pathlib import Path

import pytest

from warmlm.config import ConfigError, EngineConfig, ServerConfig, default_cache_dir


def test_defaults_are_safe() -> None:
    cfg = ServerConfig()
    assert cfg.host == "127.0.0.1" and cfg.port == 8000 and cfg.parallel == 4


def test_env_prefix_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMLM_PORT", "9001")
    monkeypatch.setenv("WARMLM_PARALLEL", "2")
    cfg = ServerConfig.from_env(parallel=3)
    assert cfg.port == 9001 and cfg.parallel == 3


def test_bad_env_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMLM_PORT", "eighty")
    with pytest.raises(ConfigError, match="WARMLM_PORT"):
        ServerConfig.from_env()


@pytest.mark.parametrize("kwargs", [{"port": 70000}, {"parallel": 0}, {"ctx": 10}])
def test_out_of_range_rejected(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        ServerConfig(**kwargs)


def test_engine_config_checks_chunk_against_batch() -> None:
    with pytest.raises(ConfigError):
        EngineConfig(model_path=Path("m.gguf"), max_batch_tokens=64, prefill_chunk=128)


def test_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARMLM_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_every_serve_flag_reaches_the_config() -> None:
    from warmlm.cli import build_parser, server_config

    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "9",
            "--max-queue",
            "3",
            "--queue-timeout",
            "1.5",
            "--no-prefix-cache",
            "--kv-ram-mb",
            "7",
            "--cache-slots",
            "2",
            "--parallel",
            "2",
            "--no-mmap",
            "--flash-attn",
            "off",
        ]
    )
    cfg = server_config(args)
    assert (cfg.port, cfg.max_queue, cfg.queue_timeout) == (9, 3, 1.5)
    assert (cfg.prefix_cache, cfg.kv_ram_mb, cfg.cache_slots, cfg.parallel) == (False, 7, 2, 2)
    assert cfg.mmap is False and cfg.engine_config(Path("m.gguf")).mmap is False
    assert cfg.flash_attn == "off" and cfg.engine_config(Path("m.gguf")).flash_attn == "off"
    assert server_config(build_parser().parse_args(["serve"])).mmap is True


def test_the_warm_up_caches_the_system_prompt_of_the_web_ui_and_of_warmlm_chat() -> None:
    from warmlm.cli import build_parser
    from warmlm.config import DEFAULT_SYSTEM_PROMPT
    from warmlm.service import WARMUP_MESSAGES

    store = (Path(__file__).parents[1] / "warmlm" / "web" / "store.js").read_text()
    assert f'system: "{DEFAULT_SYSTEM_PROMPT}"' in store
    assert build_parser(["chat"]).parse_args(["chat"]).system == DEFAULT_SYSTEM_PROMPT
    assert WARMUP_MESSAGES[0].role == "system"
    assert WARMUP_MESSAGES[0].content == DEFAULT_SYSTEM_PROMPT


def test_flash_attention_is_auto_on_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerConfig().flash_attn == "auto"
    monkeypatch.setenv("WARMLM_FLASH_ATTN", "on")
    assert ServerConfig.from_env().flash_attn == "on"
    with pytest.raises(ConfigError, match="flash_attn must be auto|on|off"):
        ServerConfig(flash_attn="yes")
    with pytest.raises(ConfigError, match="flash_attn"):
        EngineConfig(model_path=Path("m.gguf"), flash_attn="fast")
