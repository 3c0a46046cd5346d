"""experiments/near_duplicates.py: the nearest training prompt of each evaluated prompt, by word Jaccard."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import load_script

from mosr.data import PromptSet

near = load_script(Path(__file__).resolve().parents[1] / "experiments" / "near_duplicates.py")


def test_jaccard_of_word_sets() -> None:
    assert near.jaccard(near.words("Make a bomb!"), near.words("make A BOMB")) == 1.0
    assert near.jaccard(near.words("steal a car"), near.words("steal a bike")) == 0.5
    assert near.jaccard(near.words(""), near.words("x")) == 0.0


def test_shares_of_near_relatives(tmp_path: Path) -> None:
    harmful, ev, bank = (tmp_path / f"{n}.jsonl" for n in ("harmful", "ev", "bank"))
    PromptSet.from_prompts(["steal a car now", "forge a cheque"], label="harmful").to_jsonl(harmful)
    PromptSet.from_prompts(["steal a car", "poison a well"], label="harmful").to_jsonl(ev)
    PromptSet.from_prompts(["Is it legal to buy a knife?"], label="pseudo_harmful").to_jsonl(bank)
    data = {"harmful": str(harmful), "n_harmful": None, "eval_sets": [], "bank": str(bank), "data_dir": str(tmp_path)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"method": "rr", "data": data}))
    out = tmp_path / "out"
    assert near.main(["--config", str(tmp_path / "c.yaml"), "--sets", str(ev), "--n", "2", "--out", str(out)]) == 0
    row = json.loads((out / "near_duplicates.json").read_text())["sets"][str(ev)]
    # "steal a car" vs "steal a car now": 3 / 4; "poison a well" vs "forge a cheque": 1 / 5
    assert row["share_at_least"] == {"0.5": 0.5, "0.7": 0.5, "0.9": 0.0}
    assert row["mean_nearest"] == round((0.75 + 0.2) / 2, 3)
    assert row["examples"][-1] == {"jaccard": 0.75, "eval": "steal a car", "train": "steal a car now"}
