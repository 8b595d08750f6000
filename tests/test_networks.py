"""LoRA, embeddings, variation seeds, CLIP skip, styles and colour correction through the engine."""

import hashlib
import struct

import pytest
import torch
from diffusers import AutoPipelineForImage2Image, EulerDiscreteScheduler
from PIL import Image

from img2img import Engine, InvalidRequest
from img2img.conditioning import PromptEncoder
from img2img.infotext import parse_infotext
from img2img.networks import applied_loras, list_files, load_embeddings
from img2img.prompts import NetworkTag

RUN = {"seed": 11, "steps": 6, "strength": 0.7, "cfg_scale": 5.0, "sampler": "Euler", "scheduler": "Automatic"}


@pytest.fixture(scope="module")
def net_engine(tiny_sd, folders):
    return Engine(str(tiny_sd), device="cpu", lora_dir=folders / "loras", embeddings_dir=folders / "embeddings",
                  styles_file=folders / "styles.csv")


def bare(tiny_sd):
    pipe = AutoPipelineForImage2Image.from_pretrained(tiny_sd)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bare_image(pipe, image_path, prompt):
    return pipe(prompt=prompt, image=Image.open(image_path), strength=RUN["strength"],
                num_inference_steps=RUN["steps"], guidance_scale=RUN["cfg_scale"],
                generator=torch.Generator("cpu").manual_seed(RUN["seed"])).images[0]


def test_lora_at_weight_w_equals_diffusers_set_adapters(net_engine, tiny_sd, folders, square_path):
    pipe = bare(tiny_sd)
    pipe.load_lora_weights(str(folders / "loras" / "kohya.safetensors"), adapter_name="k")
    pipe.load_lora_weights(str(folders / "loras" / "styles" / "peft.safetensors"), adapter_name="p")
    pipe.set_adapters(["k"], [0.7])
    expected_one = bare_image(pipe, square_path, "a boat")
    pipe.set_adapters(["k", "p"], [0.5, 1.2])
    expected_two = bare_image(pipe, square_path, "a boat")
    one = net_engine.transform(square_path, "a boat <lora:kohya:0.7>", **RUN)
    two = net_engine.transform(square_path, "a boat <lora:kohya:0.5> <lora:peft:1.2>", **RUN)
    assert one.image.tobytes() == expected_one.tobytes()
    assert two.image.tobytes() == expected_two.tobytes()
    assert one.image.tobytes() != two.image.tobytes()


def test_lora_is_active_only_for_its_request(net_engine, tiny_sd, square_path):
    plain = bare_image(bare(tiny_sd), square_path, "a boat")
    zero = net_engine.transform(square_path, "a boat <lora:kohya:0>", **RUN)
    with_lora = net_engine.transform(square_path, "a boat <lora:kohya:1>", **RUN)
    after = net_engine.transform(square_path, "a boat", **RUN)
    assert zero.image.tobytes() == plain.tobytes()
    assert with_lora.image.tobytes() != plain.tobytes()
    assert after.image.tobytes() == plain.tobytes()
    assert net_engine.load().pipe.get_list_adapters() == {}


def test_lora_in_text_encoder_changes_the_prompt_embeddings(net_engine, folders):
    pipe = net_engine.load().pipe
    plain = PromptEncoder(pipe).encode("a boat").hidden
    for name in ("kohya", "peft"):
        with applied_loras(pipe, [NetworkTag("lora", name)], folders / "loras"):
            assert not torch.equal(PromptEncoder(pipe).encode("a boat").hidden, plain), name
    assert torch.equal(PromptEncoder(pipe).encode("a boat").hidden, plain)


def addnet_hash(path):
    data = path.read_bytes()
    return hashlib.sha256(data[8 + struct.unpack("<Q", data[:8])[0]:]).hexdigest()[:12]


def test_infotext_records_lora_hashes_as_a1111(net_engine, folders, square_path):
    result = net_engine.transform(square_path, "a boat <lora:kohya:0.6>, <lora:peft:1>", **RUN)
    prompt, _, params = parse_infotext(result.infotexts[0])
    assert prompt == "a boat <lora:kohya:0.6>, <lora:peft:1>"  # the prompt as written, tags included
    kohya = addnet_hash(folders / "loras" / "kohya.safetensors")
    peft = addnet_hash(folders / "loras" / "styles" / "peft.safetensors")
    assert params["Lora hashes"] == f"kohya: {kohya}, peft: {peft}"
    assert '"kohya: ' in result.infotexts[0]  # quoted, as A1111 writes it


def test_unknown_lora_names_the_available_ones_before_loading(net_engine, square_path):
    with pytest.raises(InvalidRequest, match=r"'nope' not found .*available: kohya, peft, xl-only"):
        net_engine.prepare(__import__("img2img").Request(prompt="x <lora:nope:1>"))


def test_lora_for_another_model_family_is_refused_and_leaves_no_trace(net_engine, tiny_sd, square_path):
    with pytest.raises(InvalidRequest, match="xl-only.*does not fit"):
        net_engine.transform(square_path, "a boat <lora:xl-only:1>", **RUN)
    assert net_engine.load().pipe.get_list_adapters() == {}
    after = net_engine.transform(square_path, "a boat", **RUN)
    assert after.image.tobytes() == bare_image(bare(tiny_sd), square_path, "a boat").tobytes()


def test_only_safetensors_files_are_listed(folders):
    assert sorted(list_files(folders / "loras")) == ["kohya", "peft", "xl-only"]


def test_embedding_replaces_the_tokens_of_its_name(net_engine, folders, tmp_path):
    pipe = net_engine.load().pipe
    # an embedding whose vectors are the token vectors of "cat" must encode exactly like "cat"
    ids = pipe.tokenizer("cat", add_special_tokens=False)["input_ids"]
    vectors = pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone()
    encoder = PromptEncoder(pipe, embeddings={"kitty": [vectors]})
    assert torch.equal(encoder.encode("a (kitty:1.2) on a mat").hidden, encoder.encode("a (cat:1.2) on a mat").hidden)
    assert encoder.used_embeddings == {"kitty"}


def test_embeddings_folder_sorted_by_fit(net_engine, tiny_sdxl, folders):
    sd = load_embeddings(net_engine.load().pipe, folders / "embeddings")
    assert sorted(sd.loaded) == ["fuzzy", "legacy"] and sorted(sd.skipped) == ["xlemb"]
    assert sd.loaded["fuzzy"].describe() == {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                             "shape": 32, "vectors": 3}
    xl = load_embeddings(Engine(str(tiny_sdxl), device="cpu").load().pipe, folders / "embeddings")
    assert sorted(xl.loaded) == ["xlemb"] and sorted(xl.skipped) == ["fuzzy", "legacy"]
    assert xl.loaded["xlemb"].shape == 64


def test_embedding_in_a_prompt_changes_the_image_and_is_recorded(net_engine, folders, square_path):
    plain = net_engine.transform(square_path, "a photo", **RUN)
    used = net_engine.transform(square_path, "a photo fuzzy", **RUN)
    other = net_engine.transform(square_path, "a photo legacy", **RUN)
    assert len({plain.image.tobytes(), used.image.tobytes(), other.image.tobytes()}) == 3
    digest = hashlib.sha256((folders / "embeddings" / "fuzzy.safetensors").read_bytes()).hexdigest()[:12]
    assert parse_infotext(used.infotexts[0])[2]["TI hashes"] == f"fuzzy: {digest}"
    assert "TI hashes" not in parse_infotext(plain.infotexts[0])[2]


def test_sdxl_embedding_fills_both_encoders(tiny_sdxl, folders, square_path):
    engine = Engine(str(tiny_sdxl), device="cpu", embeddings_dir=folders / "embeddings")
    plain = engine.transform(square_path, "a photo", **RUN)
    used = engine.transform(square_path, "a photo xlemb", **RUN)
    assert plain.image.tobytes() != used.image.tobytes()
    assert "TI hashes" in parse_infotext(used.infotexts[0])[2]


def test_variation_strength_zero_and_one_give_the_seed_and_subseed_images(engine, square_path):
    run = dict(RUN, sampler="DPM++ 2M")
    seed_image = engine.transform(square_path, "a boat", **run)
    subseed_image = engine.transform(square_path, "a boat", **dict(run, seed=99))
    zero = engine.transform(square_path, "a boat", subseed=99, subseed_strength=0.0, **run)
    one = engine.transform(square_path, "a boat", subseed=99, subseed_strength=1.0, **run)
    half = engine.transform(square_path, "a boat", subseed=99, subseed_strength=0.5, **run)
    assert zero.image.tobytes() == seed_image.image.tobytes()
    assert one.image.tobytes() == subseed_image.image.tobytes()
    assert half.image.tobytes() not in (seed_image.image.tobytes(), subseed_image.image.tobytes())
    params = parse_infotext(half.infotexts[0])[2]
    assert params["Variation seed"] == "99" and params["Variation seed strength"] == "0.5"
    assert "Variation seed" not in parse_infotext(zero.infotexts[0])[2]


def test_variation_batch_keeps_the_seed_and_counts_subseeds_up(engine, square_path):
    batch = engine.transform(square_path, "a boat", subseed=40, subseed_strength=0.3, batch_size=2, **RUN)
    assert batch.seeds == [RUN["seed"]] * 2 and batch.subseeds == [40, 41]
    single = engine.transform(square_path, "a boat", subseed=41, subseed_strength=0.3, **RUN)
    assert batch.images[1].tobytes() == single.image.tobytes()
    assert parse_infotext(batch.infotexts[1])[2]["Variation seed"] == "41"


def test_clip_skip_uses_an_earlier_layer(engine):
    pipe = engine.load().pipe
    ids = pipe.tokenizer("a boat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = pipe.text_encoder.final_layer_norm(hidden)
    skipped = PromptEncoder(pipe, clip_skip=2).encode("a boat").hidden
    assert torch.equal(skipped, expected)
    assert not torch.equal(skipped, PromptEncoder(pipe).encode("a boat").hidden)


def test_clip_skip_is_recorded(engine, square_path):
    result = engine.transform(square_path, "a boat", clip_skip=2, **RUN)
    assert parse_infotext(result.infotexts[0])[2]["Clip skip"] == "2"


def test_styles_apply_in_order_and_unknown_names_are_refused(net_engine, square_path):
    result = net_engine.transform(square_path, "a boat", styles=["film", "warm"], negative_prompt="dark", **RUN)
    assert result.request.prompt == "a boat, film grain, warm light"
    assert result.request.negative_prompt == "dark, blurry"
    assert result.infotexts[0].startswith("a boat, film grain, warm light\nNegative prompt: dark, blurry\n")
    with pytest.raises(InvalidRequest, match=r"style 'noir' not found .*available: film, warm"):
        net_engine.transform(square_path, "a boat", styles=["noir"], **RUN)


def test_color_correction_moves_colours_towards_the_input(engine, square_path):
    import numpy as np

    source = np.asarray(Image.open(square_path).convert("RGB"), dtype=float)
    plain = engine.transform(square_path, "a boat", **dict(RUN, strength=1.0))
    corrected = engine.transform(square_path, "a boat", color_correction=True, **dict(RUN, strength=1.0))
    distance = [np.abs(np.asarray(im, dtype=float).mean((0, 1)) - source.mean((0, 1))).sum()
                for im in (plain.image, corrected.image)]
    assert distance[1] < distance[0] / 2
    assert parse_infotext(corrected.infotexts[0])[2]["Color correction"] == "True"
