"""The documentation stays true: its checked transcripts match what the commands print now, and the layout
page names every package module."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _transcripts():
    spec = importlib.util.spec_from_file_location("transcripts", ROOT / "docs" / "transcripts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_documented_cheap_commands_print_what_the_docs_show(tmp_path):
    t = _transcripts()
    assert sum(len(t.blocks(p)) for p in (ROOT / "docs").rglob("*.md")) >= 4
    assert t.check() == []  # `python docs/transcripts.py --update` rewrites them after a deliberate change


def test_the_transcript_check_fails_when_an_output_changes(tmp_path, monkeypatch):
    t = _transcripts()
    page = tmp_path / "page.md"
    page.write_text("<!-- transcript -->\n```text\n$ scalelab predict hoffmann2022 --params 7e9 --tokens 2e12\n"
                    "an output the command does not print\n```\n")
    monkeypatch.setattr(t, "DOCS", tmp_path)
    assert t.check() == ["page.md"]


def test_the_generated_layout_names_every_module_with_what_it_is():
    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    table = hooks.layout()
    modules = sorted((ROOT / "src" / "scalelab").rglob("*.py"))
    undocumented = [line for line in table.splitlines()[2:] if line.endswith("|  |")]
    assert len(table.splitlines()) == len(modules) + 2 and undocumented == []  # each module says what it is
    assert "## Layout" in (ROOT / "docs" / "contributing.md").read_text() and hooks.LAYOUT in \
        (ROOT / "docs" / "contributing.md").read_text()
