"""Prompt embeddings: parity with diffusers for plain prompts, A1111's emphasis, chunks, BREAK, schedules."""

import contextlib

import pytest
import torch

from img2img import Engine
from img2img.conditioning import CHUNK, PromptEncoder, build_chunks

LONG = "a quiet harbour at dawn with fishing boats " * 3  # ~130 single-letter tokens with the tiny tokenizer


@pytest.fixture(scope="module")
def sd_pipe(engine):
    return engine.load().pipe


@pytest.fixture(scope="module")
def sdxl_engine(tiny_sdxl):
    return Engine(str(tiny_sdxl), device="cpu")


@contextlib.contextmanager
def unet_inputs(pipe):
    """Record what the UNet is given at every call: (text embeddings, pooled embeddings or None)."""
    seen = []

    def hook(_module, args, kwargs):
        added = kwargs.get("added_cond_kwargs") or {}
        seen.append((kwargs["encoder_hidden_states"].clone(), added.get("text_embeds")))

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_plain_prompt_gives_diffusers_own_embeddings(sd_pipe):
    expected, negative = sd_pipe.encode_prompt("a lighthouse", "cpu", 1, True, negative_prompt="fog")
    encoder = PromptEncoder(sd_pipe)
    assert torch.equal(encoder.encode("a lighthouse").hidden, expected)
    assert torch.equal(encoder.encode("fog").hidden, negative)


def test_plain_prompt_gives_diffusers_own_embeddings_on_sdxl(sdxl_engine):
    pipe = sdxl_engine.load().pipe
    hidden, _, pooled, _ = pipe.encode_prompt("a fox", device="cpu", num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    encoded = PromptEncoder(pipe).encode("a fox")
    assert encoded.hidden.shape == (1, 77, 64)  # both encoders side by side
    assert torch.equal(encoded.hidden, hidden)
    assert torch.equal(encoded.pooled, pooled)


def test_weight_one_gives_exactly_the_plain_image(engine, square_path):
    plain = engine.transform(square_path, "a lighthouse", seed=1, steps=4)
    weighted = engine.transform(square_path, "a (lighthouse:1.0)", seed=1, steps=4)
    assert weighted.image.tobytes() == plain.image.tobytes()
    assert weighted.infotexts[0].startswith("a (lighthouse:1.0)\n")  # the prompt as written


def test_emphasis_scales_token_vectors_then_restores_the_mean(sd_pipe):
    encoder = PromptEncoder(sd_pipe)
    plain = encoder.encode("a lighthouse").hidden
    weighted = encoder.encode("a (lighthouse:1.5)").hidden
    word = len(sd_pipe.tokenizer("lighthouse", add_special_tokens=False)["input_ids"])
    weights = torch.ones(77)
    weights[2:2 + word] = 1.5  # after the start token and "a"
    expected = plain * weights.reshape(1, -1, 1)
    expected = expected * (plain.mean() / expected.mean())
    assert torch.allclose(weighted, expected, atol=1e-6)
    assert not torch.allclose(weighted, plain)


def test_long_prompt_is_split_into_chunks_not_cut(engine, sd_pipe, square_path):
    encoded = PromptEncoder(sd_pipe).encode(LONG)
    assert encoded.hidden.shape[1] == 2 * 77
    start = engine.transform(square_path, LONG + "with red sails", seed=2, steps=4)
    end_changed = engine.transform(square_path, LONG + "with blue sails", seed=2, steps=4)
    assert start.image.tobytes() != end_changed.image.tobytes()  # words after token 77 still count


def test_break_starts_a_new_chunk(engine, sd_pipe, square_path):
    encoder = PromptEncoder(sd_pipe)
    broken = encoder.encode("red boat BREAK blue sky").hidden
    assert broken.shape[1] == 2 * 77
    assert torch.equal(broken[:, 77:], encoder.encode("blue sky").hidden)
    one = engine.transform(square_path, "red boat blue sky", seed=3, steps=4)
    two = engine.transform(square_path, "red boat BREAK blue sky", seed=3, steps=4)
    assert one.image.tobytes() != two.image.tobytes()


def test_a_full_chunk_moves_the_words_after_its_last_comma(sd_pipe):
    tokenizer = sd_pipe.tokenizer
    text = "x" * 70 + ", " + "yz" * 5  # 70 tokens, a comma, then 10 more: the 75-token limit falls after the comma
    chunks = build_chunks(text, tokenizer)
    comma = tokenizer.get_vocab()[",</w>"]
    assert len(chunks) == 2
    assert chunks[0].tokens[-1] == comma and len(chunks[0].tokens) == 71
    assert len(chunks[1].tokens) == 10 and len(chunks[0].tokens) + len(chunks[1].tokens) < CHUNK + 10 + 1


def test_prompt_edit_switches_embeddings_at_its_step(engine, sd_pipe, square_path):
    encoder = PromptEncoder(sd_pipe)
    cat, dog, fog, rain = (encoder.encode(t).hidden for t in ("cat", "dog", "fog", "rain"))
    with unet_inputs(sd_pipe) as seen:
        engine.transform(square_path, "[cat:dog:0.5]", negative_prompt="[fog:rain:2]", seed=4, steps=10,
                         strength=1.0, sampler="Euler")
    assert len(seen) == 10
    # A1111 counts steps from 0: "when" 5 of 10 keeps "cat" for steps 0..5
    assert [torch.equal(h[1:], cat) for h, _ in seen] == [True] * 6 + [False] * 4
    assert all(torch.equal(h[1:], dog) for h, _ in seen[6:])
    assert [torch.equal(h[:1], fog) for h, _ in seen] == [True] * 3 + [False] * 7
    assert all(torch.equal(h[:1], rain) for h, _ in seen[3:])


def test_alternation_switches_every_step_on_sdxl_with_pooled(sdxl_engine, square_path):
    pipe = sdxl_engine.load().pipe
    encoder = PromptEncoder(pipe)
    cat, dog = encoder.encode("cat"), encoder.encode("dog")
    with unet_inputs(pipe) as seen:
        sdxl_engine.transform(square_path, "[cat|dog]", seed=5, steps=5, strength=1.0, sampler="Euler",
                              batch_size=2)
    picked = []
    for hidden, pooled in seen:
        assert hidden.shape[0] == 4  # negative x2, positive x2
        is_cat = torch.equal(hidden[2:3], cat.hidden)
        assert is_cat or torch.equal(hidden[2:3], dog.hidden)
        assert torch.equal(pooled[2:3], (cat if is_cat else dog).pooled)
        picked.append("cat" if is_cat else "dog")
    assert picked == ["cat", "cat", "dog", "cat", "dog"]  # step 0 and 1 both use the first entry, as in A1111


def test_long_prompt_on_sdxl_uses_the_first_chunk_for_the_pooled_vector(sdxl_engine):
    pipe = sdxl_engine.load().pipe
    encoder = PromptEncoder(pipe)
    long = encoder.encode(LONG)
    assert long.hidden.shape == (1, 154, 64)
    assert torch.equal(long.pooled, encoder.encode(LONG + "ending differently").pooled)


def test_sd2_style_padding_token_matches_diffusers(tiny_sd):
    # SD 2.x tokenizers pad with "!" instead of the end token; chunks must pad the same way
    import copy

    from diffusers import AutoPipelineForImage2Image
    from transformers import CLIPTokenizer

    pipe = copy.copy(AutoPipelineForImage2Image.from_pretrained(tiny_sd))
    pipe.tokenizer = CLIPTokenizer.from_pretrained(str(tiny_sd / "tokenizer"), pad_token="!")
    assert pipe.tokenizer.pad_token_id != pipe.tokenizer.eos_token_id
    expected, _ = pipe.encode_prompt("a lighthouse", "cpu", 1, False)
    assert torch.equal(PromptEncoder(pipe).encode("a lighthouse").hidden, expected)
