"""The command line as a user runs it: a real subprocess, real models, a temporary index."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    return subprocess.run([sys.executable, "-m", "chatbot", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**clean, "PYTHONPATH": str(ROOT), **env})


def one_line_error(out) -> str:
    """A user error: exit code 2 and one line on stderr, never a traceback."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*") if p.is_file()}


def test_help_lists_the_commands(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("ingest", "ask", "chat", "serve", "eval"):
        assert command in out.stdout
    # and each command's own --help says what it does (an outside trial missed that on ingest)
    assert "Build the index from the corpus." in run("ingest", "--help", cwd=tmp_path).stdout


def test_missing_corpus_is_a_clear_error(tmp_path):
    out = run("ingest", "--corpus", "nope", "--index", "idx", cwd=tmp_path)
    assert "corpus folder nope does not exist" in one_line_error(out)


@pytest.mark.parametrize("args, env, message", [
    (["ask", "--config", "nope.toml", "q"], {}, "config file nope.toml does not exist (from --"),
    (["--config", "nope.toml", "ask", "q"], {}, "config file nope.toml does not exist (from --"),
    (["ask", "q"], {"CHATBOT_CONFIG": "gone.toml"}, "gone.toml does not exist (from CHATBOT_CON"),
    (["ask", "q"], {"CHATBOT_TOP_K": "abc"},
     "CHATBOT_TOP_K='abc' is not a whole number (setting top_k, default 4)"),
    (["chat"], {"CHATBOT_TOPK": "3"}, "unknown setting in the environment: CHATBOT_TOPK"),
    (["ingest", "--config", "broken.toml"], {}, "config file broken.toml is not valid TOML"),
    (["eval", "q.jsonl", "--config", "typo.toml"], {}, "unknown setting 'top_kk' in config file "),
    (["ingest", "--config", "elsewhere.toml"], {}, "corpus folder elsewhere does not exist"),
    (["-v", "ingest", "--corpus", "notes.txt"], {}, "corpus folder notes.txt is a file"),
    (["ingest", "--corpus", "docs", "--index", "notes.txt"], {}, "--index notes.txt is a file"),
    (["ask", "-k", "abc", "q"], {}, "-k: invalid int value: 'abc'; see `python -m chatbot ask --"),
    (["ask", "-k", "0", "q"], {}, "top_k = 0 (from an option) is out of range: must be above 0"),
    (["ask", "--bogus", "q"], {}, "unrecognized arguments: --bogus; see `python -m chatbot ask"),
    (["ask", " "], {}, "the question is empty; ask one"),
    (["ask"], {}, "the following arguments are required: question"),
    ([], {}, "the following arguments are required: command"),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, env, message):
    (tmp_path / "broken.toml").write_text("top_k 3\n")
    (tmp_path / "typo.toml").write_text("top_kk = 3\n")
    (tmp_path / "elsewhere.toml").write_text('corpus_dir = "elsewhere"\n')
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Rest for a week.")
    assert message in one_line_error(run(*args, cwd=tmp_path, **env))


def test_global_options_go_before_or_after_the_command():
    from chatbot.__main__ import build_parser

    parse = build_parser().parse_args
    for argv in (["--config", "x.toml", "-v", "ask", "q"], ["ask", "--config", "x.toml", "-v", "q"],
                 ["-v", "ask", "q", "--config", "x.toml"]):
        args = parse(argv)
        assert (args.config, args.verbose, args.question) == (Path("x.toml"), True, ["q"]), argv
    assert parse(["ask", "What", "do", "screws", "do?"]).question == ["What", "do", "screws", "do?"]
    args = parse(["ingest"])
    assert (args.config, args.verbose, args.force) == (None, False, False)
    assert parse(["--config", "a.toml", "ingest", "--config", "b.toml"]).config == Path("b.toml")


@pytest.mark.slow
def test_ask_json_builds_the_index_then_answers_with_citations(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    out = run("ask", "--json", "--generator", "extractive", "Can your spine curve after fusion?",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert not answer["refused"] and answer["citations"]
    assert "curve" in answer["citations"][0]["text"]
    assert (tmp_path / "index" / "manifest.json").exists()
    # A changed corpus is noticed and the index rebuilt, with the reason said.
    (tmp_path / "corpus" / "extra.md").write_text(
        "# Smoking\n\nSmoking slows bone healing after fusion.\n")
    out = run("ask", "--generator", "extractive", "Does smoking slow bone healing?", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "added: extra.md" in out.stderr
    assert "[1]" in out.stdout and "extra.md" in out.stdout


@pytest.mark.slow
def test_an_index_of_another_corpus_is_never_overwritten(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "faq")
    assert run("ingest", "--corpus", "faq", "--index", "idx", cwd=tmp_path).returncode == 0
    before = _snapshot(tmp_path / "idx")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("Another corpus entirely.\n")
    line = one_line_error(run("ask", "--corpus", "other", "--index", "idx", "--generator",
                              "extractive", "Hello?", cwd=tmp_path))
    assert "holds the index of" in line and "faq" in line and "ingest --force" in line
    assert one_line_error(run("ingest", "--corpus", "other", "--index", "idx", cwd=tmp_path))
    assert _snapshot(tmp_path / "idx") == before

    # Issue #13: a truncated manifest, and `ask` run where the default corpus/ is another corpus.
    manifest = tmp_path / "idx" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    shutil.copytree(tmp_path / "other", tmp_path / "corpus")
    before = _snapshot(tmp_path / "idx")
    line = one_line_error(run("ask", "--index", "idx", "--generator", "extractive", "Hello?",
                              cwd=tmp_path))
    assert f"idx holds the index of {tmp_path / 'faq'}, not of {tmp_path / 'corpus'}" in line
    assert _snapshot(tmp_path / "idx") == before  # nothing rebuilt, nothing pruned
    # its own corpus rebuilds it (from the embedding cache)
    out = run("ask", "--corpus", "faq", "--index", "idx", "--generator", "extractive",
              "Can your spine curve after fusion?", cwd=tmp_path)
    assert out.returncode == 0 and "[1]" in out.stdout, out.stderr
    assert "unreadable" in out.stderr and "0 embedded" in out.stderr


@pytest.mark.slow
def test_a_read_only_index_is_one_line_for_ingest_and_served_stale_by_ask(tmp_path):
    """A real read-only file system: a bind mount remounted read-only in a private namespace."""
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    assert run("ingest", cwd=tmp_path).returncode == 0
    before = _snapshot(tmp_path / "index")
    (tmp_path / "corpus" / "extra.md").write_text("# Smoking\n\nSmoking slows bone healing.\n")
    python = f"env PYTHONPATH={ROOT} {sys.executable} -m chatbot"
    script = (f"mount --bind index index && mount -o remount,ro,bind index && "
              f"{python} ingest 2>ingest.err; echo $? >ingest.rc; {python} ask --generator "
              "extractive 'Can your spine curve after fusion?' >ask.out 2>ask.err")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")})
    assert out.returncode == 0, out.stderr
    errors = [ln for ln in (tmp_path / "ingest.err").read_text().splitlines() if "ERROR" in ln]
    assert (tmp_path / "ingest.rc").read_text().strip() == "2" and len(errors) == 1
    assert "cannot write the index in index (Read-only file system)" in errors[0]
    assert "the previous index is unchanged" in errors[0]
    assert "Traceback" not in (tmp_path / "ingest.err").read_text()
    assert "[1]" in (tmp_path / "ask.out").read_text()
    assert "Answering from the index built" in (tmp_path / "ask.err").read_text()
    assert _snapshot(tmp_path / "index") == before


@pytest.mark.slow
def test_chat_answers_a_follow_up_in_context(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    out = subprocess.run([sys.executable, "-m", "chatbot", "chat", "--generator", "extractive"],
                         input="What are pedicle screws used for?\nCan they come loose?\n\n",
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    second = out.stdout.split("> ")[2]
    assert second.startswith("Can they come loose?\n")  # piped: the question is echoed
    assert "loosen" in second and "[1]" in second


def test_an_interrupted_command_says_what_is_kept(tmp_path, monkeypatch, caplog):
    """Ctrl-C in an outside trial's ingest ended on a half-drawn progress bar and nothing else."""
    import chatbot.__main__ as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_ingest", interrupted)
    (tmp_path / "docs").mkdir()
    assert cli.main(["ingest", "--corpus", str(tmp_path / "docs"),
                     "--index", str(tmp_path / "index")]) == 130
    assert "Interrupted" in caplog.text and "resumes" in caplog.text


def test_a_file_where_the_model_cache_folder_goes_is_named_as_such(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Rest for a week after the operation.")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").write_text("")
    out = run("ask", "--corpus", "docs", "--index", "idx", "How long should I rest?",
              cwd=tmp_path, CHATBOT_CACHE_DIR=str(tmp_path / "cache"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "models: File exists; a file is where a folder must be" in out.stderr.splitlines()[-1]
