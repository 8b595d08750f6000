"""The Gradio Blocks: form -> Request -> the server's job queue -> gallery and history.

The UI holds no generation logic: it validates through the same Service as the HTTP API, queues through
the same JobQueue (so the UI and API never run on the GPU at once), and stores results in History.
"""

from __future__ import annotations

import io
import time

import gradio as gr
from PIL import Image

from ..errors import Img2ImgError
from ..history import History
from ..images import read_infotext
from ..infotext import fields_from_infotext
from ..request import MAX_PROMPT_CHARS, Request, effective_steps
from ..schedulers import SAMPLERS, SCHEDULES
from ..server.jobs import QueueFull, ShuttingDown
from .files import read_upload
from .inpaint import build_controls, editor_value, painted_mask, request_fields, settings_from_file

POLL_SECONDS = 0.25
RESIZE_CHOICES = [("crop (keep aspect, cut edges)", "crop"), ("stretch", "stretch"),
                  ("fill (keep aspect, extend edges)", "fill"), ("latent (resize the encoded latents)", "latent")]
CSS = "#status {min-height: 2.5em} footer {display: none !important}"


def keep_original_file(image: gr.Image) -> gr.Image:
    """Make an image input hand over the uploaded file untouched (gradio would decode and re-encode it):
    img2img's own loader then applies EXIF orientation, alpha, 16-bit and pixel limits, and names a bad
    file in a readable error instead of a preprocessing failure. (An instance override: subclassing a
    gradio component makes gradio write a .pyi file next to this module.)"""
    image.preprocess = lambda payload: str(payload.path) if payload is not None and payload.path else None
    return image


def launch_options(history: History) -> dict:
    """Options for gradio's own server (notebooks): history images may be served (not the database), styling."""
    return {"allowed_paths": [str(history.images)], "css": CSS}


def user_error(message: str) -> gr.Error:
    """An error for the page, without a traceback in the server log: bad input is not a server fault."""
    return gr.Error(message, print_exception=False)


def steps_hint(steps: float, strength: float) -> str:
    runs = effective_steps(int(steps), float(strength))
    if runs < 1:
        return f"Warning: {int(steps)} steps × strength {strength:g} = **0 denoising steps**: raise steps or strength"
    return f"{int(steps)} steps × strength {strength:g} = **{runs} denoising steps** will run"


def build_ui(service, history: History) -> gr.Blocks:
    profile = service.current.source.profile
    model_names = [slot.name for slot in service.slots]
    max_file_bytes = service.config.max_body_bytes

    with gr.Blocks(title="img2img") as blocks:
        gr.Markdown("## img2img — transform a photo with a text prompt")
        if service.config.api_keys:  # logged in with the API key through the login page: a way out
            gr.HTML('<form method="post" action="/logout" style="text-align:right">'
                    '<button type="submit">Log out</button></form>')
        for notice in history.notices:
            gr.Markdown(f"Note: {notice}")
        last_seed = gr.State(None)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    image_in = keep_original_file(gr.Image(label="Input image (upload, drop or paste)",
                                                           type="filepath", sources=["upload", "clipboard"],
                                                           image_mode=None, elem_id="input-image"))
                    with gr.Row(equal_height=True):  # Generate beside the prompt: visible without scrolling
                        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt", scale=4,
                                            max_length=MAX_PROMPT_CHARS,
                                            placeholder="a magical sunset over a mountain range")
                        with gr.Column(scale=1, min_width=120):
                            generate = gr.Button("Generate", variant="primary", elem_id="generate")
                            interrupt = gr.Button("Interrupt", variant="stop", elem_id="interrupt")
                    negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="negative-prompt",
                                          max_length=MAX_PROMPT_CHARS)
                    strength = gr.Slider(0.01, 1.0, value=0.75, step=0.01, label="Strength (how far from the input)",
                                         elem_id="strength")
                    hint = gr.Markdown(steps_hint(profile.steps, 0.75), elem_id="steps-hint")
                    with gr.Row():
                        steps = gr.Slider(1, 150, value=profile.steps, step=1, label="Steps", elem_id="steps")
                        cfg = gr.Slider(0, 30, value=profile.cfg_scale, step=0.5, label="CFG scale", elem_id="cfg")
                    with gr.Row():
                        seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
                        random_seed = gr.Button("Random", size="sm")
                        reuse_seed = gr.Button("Reuse last", size="sm", elem_id="reuse-seed")
                    with gr.Row():
                        sampler = gr.Dropdown(list(SAMPLERS), value=profile.sampler, label="Sampler")
                        schedule = gr.Dropdown(list(SCHEDULES), value="Automatic", label="Schedule type")
                    model = gr.Dropdown(model_names, value=service.current.name, label="Model",
                                        interactive=len(model_names) > 1, elem_id="model")
                    with gr.Accordion("Size", open=False):
                        gr.Markdown("0 = automatic: the input's aspect ratio at the model's native area.")
                        with gr.Row():
                            width = gr.Number(value=0, precision=0, label="Width", step=8)
                            height = gr.Number(value=0, precision=0, label="Height", step=8)
                        resize_mode = gr.Radio(RESIZE_CHOICES, value="crop", label="Resize mode")
                    batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="batch-size")
                    with gr.Accordion("LoRA, styles and embeddings", open=True):
                        with gr.Row():
                            lora_pick = gr.Dropdown(_lora_names(service), label="LoRA", elem_id="lora-picker",
                                                    scale=3)
                            lora_weight = gr.Number(value=0.8, label="Weight", step=0.05, elem_id="lora-weight",
                                                    scale=1)
                            add_lora = gr.Button("Add to prompt", size="sm", elem_id="add-lora", scale=1)
                        styles_pick = gr.Dropdown(_style_names(service), multiselect=True, label="Styles",
                                                  elem_id="styles-picker")
                        refresh_networks = gr.Button("Refresh lists", size="sm", elem_id="refresh-networks")
                        gr.Markdown("Embeddings from the embeddings folder are used by writing their file name "
                                    "in a prompt; `(word:1.3)`, `[from:to:0.5]` and `BREAK` work as in A1111.")
                    with gr.Accordion("Variation seed, CLIP skip, colour correction", open=False):
                        with gr.Row():
                            subseed = gr.Number(value=-1, precision=0, label="Variation seed (-1 = random)",
                                                elem_id="subseed")
                            subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                                         elem_id="subseed-strength")
                        with gr.Row():
                            clip_skip = gr.Slider(1, 12, value=1, step=1, label="CLIP skip", elem_id="clip-skip")
                            color_correction = gr.Checkbox(False, label="Colour correction (match the input)",
                                                           elem_id="color-correction")
                    inpaint = build_controls()
                    params_drop = gr.File(label="Drop an earlier output here to load its parameters",
                                          file_types=["image"], elem_id="params-drop")
                with gr.Column(scale=1):
                    status = gr.Markdown("", elem_id="status")
                    preview = gr.Image(label="Live preview", visible=False, interactive=False, elem_id="preview")
                    gallery = gr.Gallery(label="Results", columns=2, elem_id="results", format="png",
                                         buttons=["download", "fullscreen"])
                    compare = gr.ImageSlider(label="Before / after", elem_id="compare", type="filepath")
                    with gr.Row():
                        use_as_input = gr.Button("Use selected result as input", elem_id="use-as-input")
                        download = gr.DownloadButton("Download PNG (with parameters)", elem_id="download")
                    selected = gr.State(None)
        with gr.Tab("History", elem_id="history-tab") as history_tab:
            with gr.Row():
                refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh")
                delete = gr.Button("Delete selected", variant="stop", size="sm", elem_id="history-delete")
            history_gallery = gr.Gallery(label="Past generations (newest first)", columns=6, elem_id="history",
                                         format="png")
            history_details = gr.Markdown("", elem_id="history-details")
            history_ids = gr.State([])
            history_selected = gr.State(None)

        # ---------------------------------------------------------------- events
        for control in (steps, strength):
            control.change(steps_hint, [steps, strength], hint, show_progress="hidden")
        random_seed.click(lambda: -1, None, seed)
        reuse_seed.click(lambda last: -1 if last is None else last, last_seed, seed)

        def on_model(name):
            profile = service.find_model(name).source.profile
            return profile.steps, profile.cfg_scale, profile.sampler

        model.change(on_model, model, [steps, cfg, sampler])

        def add_lora_tag(prompt_, name, weight):
            if not name:
                raise user_error("Pick a LoRA first.")
            tag = f"<lora:{name}:{float(weight or 0):g}>"
            return f"{prompt_.rstrip()} {tag}".strip() if prompt_ else tag

        add_lora.click(add_lora_tag, [prompt, lora_pick, lora_weight], prompt)
        refresh_networks.click(lambda: (gr.update(choices=_lora_names(service)),
                                        gr.update(choices=_style_names(service))), None, [lora_pick, styles_pick])

        def run(image_path, prompt_, negative_, strength_, steps_, cfg_, seed_, sampler_, schedule_, model_,
                width_, height_, mode_, batch_, styles_, subseed_, subseed_strength_, clip_skip_, color_, mask_editor,
                *inpaint_values):
            if not image_path:
                raise user_error("Add an input image first (upload, drop or paste one).")
            mask = painted_mask(mask_editor)
            try:
                data = read_upload(image_path, max_file_bytes)
                slot = service.find_model(model_, "model")
                request = Request(prompt=prompt_ or "", negative_prompt=negative_ or "", strength=float(strength_),
                                  steps=int(steps_), cfg_scale=float(cfg_), sampler=sampler_, scheduler=schedule_,
                                  seed=None if seed_ is None or int(seed_) < 0 else int(seed_),
                                  width=int(width_ or 0) or None, height=int(height_ or 0) or None, resize_mode=mode_,
                                  batch_size=int(batch_), styles=tuple(styles_ or ()),
                                  subseed=None if subseed_ is None or int(subseed_) < 0 else int(subseed_),
                                  subseed_strength=float(subseed_strength_ or 0), clip_skip=int(clip_skip_ or 1),
                                  color_correction=bool(color_), **request_fields(*inpaint_values))
                service.check_image(data, "input image")
                request, _ = service.prepare(slot, request)
                service.check_repaint(request, data, mask)
                job = service.queue.submit(lambda job: service.generate(job, slot, request, data, mask=mask),
                                           label=slot.name)
            except (Img2ImgError, QueueFull, ShuttingDown) as exc:
                raise user_error(str(exc)) from None
            # prepare() has fixed the seed (a random one if none was asked for), so "reuse last" can use it now
            yield (f"queued ({service.queue.depth} in queue)…", gr.update(visible=False), gr.update(), gr.update(),
                   gr.update(), request.seed)
            while not job.future.done():
                progress = job.progress
                if progress.started and progress.total:
                    text = f"step {progress.step} / {progress.total}"
                    if progress.parts > 1:
                        text += f" (batch {progress.part + 1} / {progress.parts})"
                    _, png = service.preview() if progress.step else (None, None)
                    picture = Image.open(io.BytesIO(png)) if png else None
                    yield (text, gr.update(value=picture, visible=picture is not None), gr.update(), gr.update(),
                           gr.update(), gr.update())
                time.sleep(POLL_SECONDS)
            try:
                outcome = job.future.result()
            except Img2ImgError as exc:
                raise user_error(str(exc)) from None
            entries = [entry for result in outcome.results for entry in history.add(result, origin="ui")]
            if not entries:
                yield ("interrupted before any image finished", gr.update(visible=False), [], None, None,
                       gr.update())
                return
            first = outcome.results[0]
            size = "×".join(map(str, first.images[0].size))
            if first.images[0].size != (first.width, first.height):  # only masked, keep size: generated apart
                size += f" (generated at {first.width}×{first.height})"
            lines = [f"done: {len(entries)} image(s), {size}, "
                     f"{first.effective_steps} denoising steps, seeds {', '.join(str(e.seed) for e in entries)}"]
            lines += [f"Note: {notice}" for result in outcome.results for notice in result.notices]
            lines += [f"Note: {notice}" for notice in outcome.notices]
            paths = [str(entry.image) for entry in entries]
            yield ("  \n".join(lines), gr.update(visible=False), paths, (image_path, paths[0]), paths[0],
                   entries[0].seed)

        image_in.change(lambda path: editor_value(path, service.config.max_pixels), image_in, inpaint.editor)
        generate.click(run, [image_in, prompt, negative, strength, steps, cfg, seed, sampler, schedule, model, width,
                             height, resize_mode, batch_size, styles_pick, subseed, subseed_strength, clip_skip,
                             color_correction, *inpaint.inputs],
                       [status, preview, gallery, compare, download, last_seed], concurrency_limit=None)
        interrupt.click(lambda: service.queue.interrupt() and None, None, None)

        def on_select(paths, event: gr.SelectData):
            path = _gallery_path(paths, event.index)
            return path, path

        gallery.select(on_select, gallery, [selected, download])
        use_as_input.click(lambda path: path if path else gr.update(), selected, image_in)

        def load_params(file):
            if file is None:
                return [gr.update()] * 15
            try:
                text = read_infotext(read_upload(file if isinstance(file, str) else file.name, max_file_bytes))
                if not text:
                    raise user_error("That image carries no generation parameters.")
                fields = fields_from_infotext(text)
            except Img2ImgError as exc:
                raise user_error(str(exc)) from None
            value = fields.get
            return (value("prompt", ""), value("negative_prompt", ""), value("strength", gr.update()),
                    value("steps", gr.update()), value("cfg_scale", gr.update()), value("seed", gr.update()),
                    value("sampler", gr.update()), value("scheduler", gr.update()), value("width", gr.update()),
                    value("height", gr.update()), value("resize_mode", gr.update()), value("subseed", -1),
                    value("subseed_strength", 0), value("clip_skip", 1), value("color_correction", False))

        params_drop.upload(load_params, params_drop, [prompt, negative, strength, steps, cfg, seed, sampler, schedule,
                                                      width, height, resize_mode, subseed, subseed_strength,
                                                      clip_skip, color_correction])
        params_drop.upload(settings_from_file, params_drop, inpaint.settings)

        def show_history():
            entries = history.list(limit=200)
            items = [(str(e.image), f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(e.created))} · "
                                    f"{e.prompt[:60]}") for e in entries]
            return items, [e.id for e in entries], None, f"{len(entries)} generation(s) in {history.folder}"

        def on_history_select(ids, event: gr.SelectData):
            entry = history.get(ids[event.index]) if event.index < len(ids) else None
            if entry is None:
                return None, "That entry no longer exists."
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
            return entry.id, f"**{when}** · `{entry.image.name}`\n\n```\n{entry.infotext}\n```"

        def delete_selected(entry_id):
            if entry_id is None:
                raise user_error("Select an entry in the history first.")
            history.delete(entry_id)
            return show_history()

        history_outputs = [history_gallery, history_ids, history_selected, history_details]
        refresh.click(show_history, None, history_outputs)
        history_tab.select(show_history, None, history_outputs)
        blocks.load(show_history, None, history_outputs)
        history_gallery.select(on_history_select, history_ids, [history_selected, history_details])
        delete.click(delete_selected, history_selected, history_outputs)
    blocks.queue(default_concurrency_limit=None)
    return blocks


def _lora_names(service) -> list[str]:
    from ..networks import list_files

    return list(list_files(service.current.engine.lora_dir))


def _style_names(service) -> list[str]:
    from ..styles import load_styles

    try:
        return list(load_styles(service.current.engine.styles_file))
    except Img2ImgError:
        return []


def _gallery_path(paths, index) -> str | None:
    if not paths or index is None or index >= len(paths):
        return None
    item = paths[index]
    if isinstance(item, (list, tuple)):
        item = item[0]
    if isinstance(item, dict):
        item = item.get("image", {}).get("path") if isinstance(item.get("image"), dict) else item.get("path")
    return str(item) if item else None
