import re
from pathlib import Path

import pytest

from chatbot.config import Settings, SettingsError, load_settings


def test_precedence_defaults_file_env_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "chatbot.toml"
    cfg.write_text('top_k = 7\nmin_score = 0.5\nindex_dir = "from-file"\n')
    monkeypatch.setenv("CHATBOT_MIN_SCORE", "0.45")
    s = load_settings(cfg, index_dir="from-flag")
    assert s.top_k == 7  # file over default
    assert s.min_score == 0.45  # environment over file
    assert s.index_dir == Path("from-flag")  # flag over everything
    assert s.corpus_dir == Settings().corpus_dir  # untouched default


def test_a_corpus_carries_its_readers_wording_and_nothing_else(tmp_path, monkeypatch):
    """A bike-shop corpus got the FAQ's medical disclaimer in an outside trial: the wording for
    a corpus's readers now comes with the corpus (the seed FAQ's corpus/chatbot.toml)."""
    monkeypatch.chdir(tmp_path)
    shop = tmp_path / "shop"
    shop.mkdir()
    assert "medical" not in load_settings(corpus_dir=shop).disclaimer
    assert load_settings(corpus_dir=shop).refusal_advice == ""
    seed = load_settings(corpus_dir=Path(__file__).resolve().parents[1] / "corpus")
    assert "not medical advice" in seed.disclaimer and "care team" in seed.refusal_advice
    (shop / "chatbot.toml").write_text('refusal_advice = "Ask at the counter."\n')
    assert load_settings(corpus_dir=shop).refusal_advice == "Ask at the counter."
    cfg = tmp_path / "site.toml"  # the operator's own file wins over the corpus's
    cfg.write_text('refusal_advice = "Call us."\n')
    assert load_settings(cfg, corpus_dir=shop).refusal_advice == "Call us."
    (shop / "chatbot.toml").write_text("support_threshold = 0.1\n")  # not the documents' call
    with pytest.raises(SettingsError, match=r"chatbot.toml sets 'support_threshold', but a "
                                            r"corpus may set only disclaimer, refusal_advice"):
        load_settings(corpus_dir=shop)


def test_unknown_setting_is_an_error_that_names_it(tmp_path):
    cfg = tmp_path / "chatbot.toml"
    cfg.write_text("top_kk = 3\n")
    with pytest.raises(ValueError, match="top_kk"):
        load_settings(cfg)


def test_models_set_offline_mode_where_they_load(monkeypatch):
    """Not at import (tests/test_api.py checks that): where a model loads, and in the CLI."""
    import os

    from chatbot import models

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    models.offline()
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"


# -- every bad setting is one line naming the setting, the value, where it came from ---------------

@pytest.mark.parametrize("toml, message", [
    ('top_k = "abc"\n', "top_k = 'abc' in config file {cfg} is not a whole number (setting top_k"),
    ("top_k = 3.5\n", "top_k = 3.5 in config file {cfg} is not a whole number (setting top_k"),
    ("top_k = true\n", "top_k = True in config file {cfg} is not a whole number"),
    ("min_score = -0.1\n", "min_score = -0.1 in config file {cfg} is out of range"),
    ("corpus_dir = 3\n", "corpus_dir = 3 in config file {cfg} is not a path (string)"),
    ('generator = "gpt"\n', "is not one of local, transformers, extractive, openai (setting generator"),
    ('corpus_dr = "x"\n', "unknown setting 'corpus_dr' in config file {cfg}; did you mean"),
    ("top_k 3\n", "config file {cfg} is not valid TOML: Expected '=' after a key"),
])
def test_bad_config_file_values_name_the_setting_and_the_file(tmp_path, toml, message):
    cfg = tmp_path / "chatbot.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError) as err:
        load_settings(cfg)
    assert message.format(cfg=cfg) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("var, value, message", [
    ("CHATBOT_TOP_K", "abc", "CHATBOT_TOP_K='abc' is not a whole number (setting top_k, default"),
    ("CHATBOT_MIN_SCORE", "high", "CHATBOT_MIN_SCORE='high' is not a number (setting min_score"),
    ("CHATBOT_MAX_FILE_MB", "0", "CHATBOT_MAX_FILE_MB='0' is out of range: must be above 0"),
    ("CHATBOT_MIN_SCORE", "nan", "CHATBOT_MIN_SCORE='nan' is not a number"),
    ("CHATBOT_RETRIEVAL_MODE", "fast", "is not one of dense, bm25, blend, rrf (setting retrieval"),
    ("CHATBOT_TOPK", "6", "unknown setting in the environment: CHATBOT_TOPK; did you mean"),
])
def test_bad_environment_values_name_the_variable(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()


def test_environment_values_are_typed(monkeypatch):
    monkeypatch.setenv("CHATBOT_TOP_K", " 6 ")
    monkeypatch.setenv("CHATBOT_MAX_FILE_MB", "2")
    monkeypatch.setenv("CHATBOT_CORPUS_DIR", "~/docs")
    s = load_settings()
    assert (s.top_k, s.max_file_mb, s.corpus_dir) == (6, 2.0, Path.home() / "docs")


def test_missing_config_file_says_where_the_name_came_from(tmp_path, monkeypatch):
    with pytest.raises(SettingsError, match=r"nope.toml does not exist \(from --config\)"):
        load_settings(tmp_path / "nope.toml")
    monkeypatch.setenv("CHATBOT_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(SettingsError, match=r"gone.toml does not exist \(from CHATBOT_CONFIG\)"):
        load_settings()
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(tmp_path)  # a folder


def test_yes_no_values():
    from chatbot.config import _typed

    assert [_typed("bool", v) for v in ("1", " Yes", "on", True, "0", "false", "OFF", False)] == \
        [True] * 4 + [False] * 4
    assert _typed("bool", "maybe") is None and _typed("int", True) is None
