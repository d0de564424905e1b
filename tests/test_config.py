from pathlib import Path

import pytest

from chatbot.config import Settings, load_settings


def test_precedence_defaults_file_env_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "chatbot.toml"
    cfg.write_text('top_k = 7\nmin_score = 0.5\nindex_dir = "from-file"\n')
    monkeypatch.setenv("CHATBOT_MIN_SCORE", "0.45")
    s = load_settings(cfg, index_dir="from-flag")
    assert s.top_k == 7  # file over default
    assert s.min_score == 0.45  # environment over file
    assert s.index_dir == Path("from-flag")  # flag over everything
    assert s.corpus_dir == Settings().corpus_dir  # untouched default


def test_unknown_setting_is_an_error_that_names_it(tmp_path):
    cfg = tmp_path / "chatbot.toml"
    cfg.write_text("top_kk = 3\n")
    with pytest.raises(ValueError, match="top_kk"):
        load_settings(cfg)


def test_package_sets_offline_mode():
    import os

    import chatbot  # noqa: F401

    assert os.environ["HF_HUB_OFFLINE"] == "1"
