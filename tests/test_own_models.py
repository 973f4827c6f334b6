"""The README's "Your own model" examples, run as written: a torchvision ResNet-18 and a Hugging
Face encoder of the user's through the chapters' machinery, at smoke scale."""

from __future__ import annotations

import re
import shutil

import pytest

from mexlib import paths

transformers = pytest.importorskip("transformers")


def _examples() -> list[str]:
    """The Python blocks of the README's "Your own model" section, in order."""
    readme = (paths.ROOT / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_both_examples():
    blocks = _examples()
    assert len(blocks) == 2 and "torchvision:resnet18" in blocks[0] and "huggingface:" in blocks[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_torchvision_resnet18_with_exits_after_its_stages_runs_through_the_regimes_chapter():
    namespace: dict = {}
    exec(_examples()[0], namespace)
    result = namespace["result"]
    study = result["study"]
    assert study.runs[0].config.exit_after_blocks == (2, 4, 6) and study.num_exits == 4
    assert {"disjoint", "joint", "mixed"} == set(study.regimes)
    assert "regimes_budget_table" in result.tables


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_users_hugging_face_encoder_runs_through_the_language_chapter(tmp_path):
    """A small BERT saved as a user's folder (MiniLM's tokenizer beside random weights)."""
    from mexlib.models.encoders import model_source

    folder = tmp_path / "my-encoder"
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, pad_token_id=0)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer_source = model_source("minilm-l6")[0]
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy2(f"{tokenizer_source}/{name}", folder / name)
    code = _examples()[1].replace("/path/to/your/model", str(folder))
    namespace: dict = {}
    exec(code, namespace)
    study = namespace["result"]["study"]
    assert study.runs[0].config.arch == f"huggingface:{folder}" and study.num_exits == 2
    final = namespace["result"].tables["language_final_exit"].frame
    # the regimes and the equal-compute controls, compared at the final exit seed by seed
    from mexlib.chapters.language import final_pairs
    from mexlib.study import CONTROLS, control_epochs
    epochs = control_epochs("smoke", arch=f"huggingface:{folder}")
    controls = {kind: label.format(epochs=epochs) for kind, label in CONTROLS.items()}
    assert set(controls.values()) <= set(study.regimes)
    assert list(final.index) == [f"{a} − {b}" for a, b in final_pairs(controls)] and len(final) == 6
    assert (final["seeds"] == len(study.seeds)).all()
