"""experiments/prefill_completions.py: the prefix cut, and a resumable run on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

prefill = load_script(Path(__file__).resolve().parents[1] / "experiments" / "prefill_completions.py")


def test_prefix_keeps_the_first_words_with_their_spacing() -> None:
    text = "  Here are\nthree  targets:\n\n1. DNS"
    assert prefill.prefix_words(text, 2) == "Here are"
    assert prefill.prefix_words(text, 4) == "Here are\nthree  targets:"
    assert prefill.prefix_words(text, 40) == text.strip()


def test_every_row_is_kept_or_skipped_once_and_a_rerun_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src.jsonl"
    rows = [
        {"id": f"h{i}", "prompt": f"Explain step {i} of the plan.", "completion": "Sure, here is step one."}
        for i in range(3)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    args = ["--model", "tiny:llama", "--from", str(src), "--words", "3", "--max-new-tokens", "4", "--out", str(out)]
    prefill.main(args)
    kept = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    skipped = [json.loads(x) for x in out.with_name("out.skipped.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in kept + skipped) == ["h0", "h1", "h2"]
    for r in kept + skipped:
        assert r["completion"].startswith("Sure, here is") and r["verdict"] in ("compliance", "refusal", "degenerate")
    assert all(r["verdict"] == "compliance" for r in kept)
    prefill.main(args)  # nothing left to do
    assert "complete" in capsys.readouterr().out


def test_rows_without_a_completion_are_a_one_line_error(tmp_path: Path) -> None:
    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"id": "a", "prompt": "p"}) + "\n")
    with pytest.raises(SystemExit, match="every row needs id, prompt and completion"):
        prefill.main(["--model", "tiny:llama", "--from", str(src), "--out", str(tmp_path / "o.jsonl")])
