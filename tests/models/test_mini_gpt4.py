"""The tiny mini_gpt4: build, loss, prompt wrapping, freezing, generation, stopping."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xraygpt.common.constants import IGNORE_INDEX
from xraygpt.models.mini_gpt4 import MiniGPT4

CAPTIONS = ["the heart is normal in size", "no acute cardiopulmonary abnormality. lungs are clear"]
PROMPTS = [
    "<Img><ImageHere></Img> Describe this chest x-ray image in detail.",
    "<Img><ImageHere></Img> Any abnormality?",
    "<ImageHere> heart?",
]


def test_shipped_tiny_model_is_small_and_builds_fast():
    torch.manual_seed(0)
    cfg = MiniGPT4.default_config("tiny")
    start = time.perf_counter()
    model = MiniGPT4.from_config(cfg)
    elapsed = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 10_000_000
    assert elapsed < 10.0  # ~0.3 s on an idle 2-core CPU; generous for a busy CI box
    # the tiny recipe trains everything
    assert model.num_trainable() == n_params
    assert model.llama_tokenizer.pad_token_id == model.llama_tokenizer.eos_token_id == 2
    assert len(model.prompt_list) >= 10
    assert all(p.startswith("###Patient: <Img><ImageHere></Img> ") for p in model.prompt_list)
    assert all(p.endswith(" ###Doctor: ") for p in model.prompt_list)


def test_forward_backward_reaches_every_trainable_parameter(make_model, images):
    model = make_model()
    model.train()
    loss = model({"image": images[:2], "caption": CAPTIONS})["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert model.query_tokens.grad.abs().sum() > 0
    assert model.visual_encoder.patch_embed.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("max_txt_len", [160, 4])
def test_loss_is_cross_entropy_over_caption_tokens_only(make_model, images, max_txt_len):
    model = make_model(max_txt_len=max_txt_len).eval()  # eval: no Q-Former dropout
    prompt = model.prompt_list[3]
    model.prompt_list = [prompt]
    imgs = images[:2]
    with torch.no_grad():
        loss = model({"image": imgs, "caption": CAPTIONS})["loss"]

        tok = model.llama_tokenizer
        embed = model.llama_model.get_input_embeddings()
        before, after = prompt.split("<ImageHere>")
        prefix_ids = [tok.bos_token_id] + tok(before, add_special_tokens=False).input_ids
        after_ids = tok(after, add_special_tokens=False).input_ids
        img_embeds, _ = model.encode_img(imgs)
        total, count = torch.tensor(0.0), 0
        for i, caption in enumerate(CAPTIONS):
            cap_ids = tok(caption + "###", add_special_tokens=False).input_ids[:max_txt_len]
            x = torch.cat(
                [
                    embed(torch.tensor(prefix_ids)),
                    img_embeds[i],
                    embed(torch.tensor(after_ids)),
                    embed(torch.tensor(cap_ids)),
                ]
            )
            logits = model.llama_model(inputs_embeds=x[None]).logits[0]
            first = len(prefix_ids) + img_embeds.shape[1] + len(after_ids)
            # the token at position p is predicted from position p - 1
            predicted = logits[first - 1 : first - 1 + len(cap_ids)]
            total = total + F.cross_entropy(predicted, torch.tensor(cap_ids), reduction="sum")
            count += len(cap_ids)
    assert torch.allclose(loss, total / count, atol=1e-5), (loss, total / count)


def test_forward_layout_and_labels(make_model, images):
    """[bos] + prompt-before + image + prompt-after + caption; labels only on caption tokens."""
    model = make_model().eval()
    prompt = model.prompt_list[0]
    model.prompt_list = [prompt]
    seen = {}

    def grab(module, args, kwargs):
        seen.update(kwargs)

    model.llama_model.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model({"image": images[:2], "caption": CAPTIONS})
        img_embeds, _ = model.encode_img(images[:2])

    tok = model.llama_tokenizer
    before, after = prompt.split("<ImageHere>")
    assert before == "###Patient: <Img>" and after.startswith("</Img> ")
    n_before = len(tok(before, add_special_tokens=False).input_ids)
    n_after = len(tok(after, add_special_tokens=False).input_ids)
    n_query = img_embeds.shape[1]
    start = 1 + n_before + n_query + n_after
    embeds, mask, labels = seen["inputs_embeds"], seen["attention_mask"], seen["labels"]
    bos = model.embed_tokens(torch.tensor([tok.bos_token_id]))
    assert torch.equal(embeds[:, 0], bos.expand(2, -1))
    assert torch.allclose(embeds[:, 1 + n_before : 1 + n_before + n_query], img_embeds)
    assert (labels[:, :start] == IGNORE_INDEX).all()
    for row, caption in enumerate(CAPTIONS):
        ids = tok(caption + "###", add_special_tokens=False).input_ids
        assert labels[row, start : start + len(ids)].tolist() == ids
        assert (labels[row, start + len(ids) :] == IGNORE_INDEX).all()  # padding
        assert mask[row].sum().item() == start + len(ids)


def test_prompt_wrap_puts_image_embeddings_where_the_template_says(make_model):
    model = make_model()
    prompt = "###Patient: <Img><ImageHere></Img> Describe it. ###Doctor: "
    hidden = model.llama_model.config.hidden_size
    img = torch.randn(2, 4, hidden)
    wrapped, atts = model.prompt_wrap(img, torch.ones(2, 4, dtype=torch.long), prompt)
    before = model.tokenize("###Patient: <Img>")
    after = model.tokenize("</Img> Describe it. ###Doctor: ")
    nb, na = len(before), len(after)
    assert wrapped.shape == (2, nb + 4 + na, hidden) and atts.shape == (2, nb + 4 + na)
    assert torch.equal(wrapped[:, nb : nb + 4], img)
    assert torch.equal(wrapped[1, :nb], model.embed_tokens(before))
    assert torch.equal(wrapped[0, nb + 4 :], model.embed_tokens(after))
    with pytest.raises(ValueError, match="exactly once"):
        model.prompt_wrap(img, atts, "no placeholder here")


def test_frozen_parts_have_no_grad_and_stay_in_eval(make_model, images):
    model = make_model(freeze_vit=True, freeze_qformer=True, freeze_llm=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"llama_proj.weight", "llama_proj.bias"}
    model.train()
    assert not model.visual_encoder.training and not model.ln_vision.training
    assert not model.Qformer.training and not model.llama_model.training
    assert model.llama_proj.training
    modes = _record_inference_mode(model)
    model({"image": images[:2], "caption": CAPTIONS})["loss"].backward()
    assert modes == {"visual_encoder": True, "Qformer": True}  # no autograd bookkeeping
    assert model.llama_proj.weight.grad is not None


def _record_inference_mode(model: MiniGPT4) -> dict[str, bool]:
    """Whether the vision encoder and the Q-Former ran under ``torch.inference_mode``."""
    modes: dict[str, bool] = {}
    for name in ("visual_encoder", "Qformer"):
        getattr(model, name).register_forward_hook(
            lambda *_, name=name: modes.__setitem__(name, torch.is_inference_mode_enabled())
        )
    return modes


@pytest.mark.parametrize(
    ("freeze_vit", "freeze_qformer", "inference_mode", "learning", "still"),
    [
        # stage 3 of the tiny recipe: the ViT under inference mode feeds a learning Q-Former
        (True, False, {"visual_encoder": True, "Qformer": False}, "Qformer", "visual_encoder"),
        # a trained ViT gets gradients through a frozen Q-Former (which then needs autograd)
        (False, True, {"visual_encoder": False, "Qformer": False}, "visual_encoder", "Qformer"),
    ],
)
def test_gradients_pass_through_frozen_parts_to_trained_ones(
    make_model, images, freeze_vit, freeze_qformer, inference_mode, learning, still
):
    model = make_model(freeze_vit=freeze_vit, freeze_qformer=freeze_qformer, freeze_llm=True)
    model.train()
    modes = _record_inference_mode(model)
    model({"image": images[:2], "caption": CAPTIONS})["loss"].backward()
    assert modes == inference_mode

    def grads(name: str) -> list[torch.Tensor | None]:
        return [p.grad for p in getattr(model, name).parameters()]

    assert all(g is not None for g in grads(learning))
    assert sum(g.abs().sum() for g in grads(learning)) > 0
    assert all(g is None for g in grads(still))
    assert (model.query_tokens.grad is not None) == (not freeze_qformer)
    assert set(model.trainable_state_dict()) == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize(("vit", "llm"), [("fp16", "float16"), ("bf16", "bfloat16")])
def test_frozen_half_precision_parts_as_at_full_size(make_model, images, vit, llm):
    """Frozen ViT and LLM in half precision; ln_vision, Q-Former and llama_proj stay fp32."""
    model = make_model(
        vit_precision=vit, llm_dtype=llm, freeze_vit=True, freeze_qformer=True, freeze_llm=True
    )
    assert model.visual_encoder.cls_token.dtype == model.llama_model.dtype != torch.float32
    assert model.ln_vision.weight.dtype == model.query_tokens.dtype == torch.float32
    assert model.llama_proj.weight.dtype == torch.float32
    loss = model({"image": images[:2], "caption": CAPTIONS})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.llama_proj.weight.grad.dtype == torch.float32
    model.eval()
    assert len(model.generate(images[:2], PROMPTS[:2], max_new_tokens=3)) == 2


def test_half_precision_trainable_parts_are_rejected(make_model):
    with pytest.raises(ValueError, match="vit_precision"):
        make_model(vit_precision="fp16", freeze_vit=False)
    with pytest.raises(ValueError, match="llm_dtype"):
        make_model(llm_dtype="float16", freeze_llm=False)


def test_batched_generation_equals_one_at_a_time(make_model, images):
    model = make_model().eval()
    batch = model.generate(images, PROMPTS, max_new_tokens=6)
    single = [
        model.generate(images[i : i + 1], [p], max_new_tokens=6)[0] for i, p in enumerate(PROMPTS)
    ]
    assert batch == single
    assert all(batch), batch  # a random model babbles; empty would make the check vacuous
    assert model.generate(images, PROMPTS, max_new_tokens=6) == batch  # deterministic


def test_batched_beam_search_equals_one_at_a_time(make_model, images):
    model = make_model().eval()
    opts = {"num_beams": 3, "max_new_tokens": 5}
    batch = model.generate(images, PROMPTS, **opts)
    single = [model.generate(images[i : i + 1], [p], **opts)[0] for i, p in enumerate(PROMPTS)]
    assert batch == single and all(batch)


def test_sampling_follows_the_seed(make_model, images):
    model = make_model().eval()
    opts = {"do_sample": True, "temperature": 1.5, "top_p": 0.95, "max_new_tokens": 6}
    torch.manual_seed(5)
    first = model.generate(images, PROMPTS, **opts)
    torch.manual_seed(5)
    assert model.generate(images, PROMPTS, **opts) == first


class ScriptedHead(nn.Module):
    """An LM head that emits a fixed token per row and step, whatever the hidden state."""

    def __init__(self, scripts: list[list[int]], vocab_size: int) -> None:
        super().__init__()
        self.scripts, self.vocab_size, self.step = scripts, vocab_size, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(hidden.shape[0], hidden.shape[1], self.vocab_size)
        for row, script in enumerate(self.scripts):
            logits[row, :, script[min(self.step, len(script) - 1)]] = 20.0
        self.step += 1
        return logits


def _ids(model, *pieces: str) -> list[int]:
    vocab = model.llama_tokenizer.get_vocab()
    return [vocab[p] for p in pieces]


def test_generation_stops_at_end_sym_per_row(make_model, images):
    model = make_model().eval()
    vocab_size = model.llama_model.config.vocab_size
    # row 0 says "###" as one piece, row 1 as "##" + "#": stopping works on text
    scripts = [
        _ids(model, "▁the", "▁heart", "###", "▁lungs", "▁clear"),
        _ids(model, "▁no", "▁acute", "▁disease", "##", "#", "▁more"),
    ]
    model.llama_model.lm_head = ScriptedHead(scripts, vocab_size)
    answers = model.generate(images[:2], PROMPTS[:2], max_new_tokens=30)
    assert answers == ["the heart", "no acute disease"]

    model.llama_model.lm_head = ScriptedHead(scripts, vocab_size)
    img_embeds = model.encode_img(images[:2])[0]
    seqs = [model.question_embeds(img_embeds[i], p) for i, p in enumerate(PROMPTS[:2])]
    embeds, mask = model.left_pad(seqs)
    ids = model.generate_from_embeds(embeds, mask, max_new_tokens=30)
    assert ids.shape[1] == 5  # the last row stopped at its 5th token, far below 30


def test_newline_end_sym(make_model, images):
    model = make_model(end_sym="\n", prompt_path="", prompt_template="").eval()
    vocab_size = model.llama_model.config.vocab_size
    model.llama_model.lm_head = ScriptedHead(
        [_ids(model, "▁lungs", "▁are", "▁clear", "<0x0A>", "▁heart")], vocab_size
    )
    assert model.generate(images[:1], ["<ImageHere>"], max_new_tokens=20) == ["lungs are clear"]


def test_generate_checks_its_inputs(make_model, images):
    model = make_model().eval()
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        model.generate(images, PROMPTS[:2])
    with pytest.raises(ValueError, match="exactly once"):
        model.generate(images[:1], ["no image placeholder"])
    with pytest.raises(ValueError, match="captions"):
        model({"image": images, "caption": CAPTIONS})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_step_and_generation_on_cuda(make_model, images):
    """XrayGPT's stage-2 set-up on a GPU: bf16 frozen parts under autocast, llama_proj learns."""
    model = make_model(
        vit_precision="bf16",
        llm_dtype="bfloat16",
        freeze_vit=True,
        freeze_qformer=True,
        freeze_llm=True,
    ).cuda()
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model({"image": images[:2].cuda(), "caption": CAPTIONS})["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.llama_proj.weight.grad.abs().sum() > 0
    model.eval()
    assert len(model.generate(images[:2].cuda(), PROMPTS[:2], max_new_tokens=4)) == 2
