"""The style editor and the LoRA picker in the dashboard: save the form as a style (POST
/styles), find it under "Your styles", render with it, edit it (PUT), see a 422 and a 409
beside their fields, delete it (DELETE); another key does not see it. The LoRA picker lists
a file placed in the server's LoRA folder, says so when the model takes none (the built-in
engine), and a request carries `loras` with the slider's weight.

This module serves its own dashboard: the engine by default, a tiny SD 1.5 model (which
takes LoRAs; only GET /models reads its folder unless a render asks for it) and a LoRA
folder, with two keys."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from safetensors.numpy import save_file

from tests.api.auth_helpers import bearer, make_key
from tests.api_server import serving
from tests.dashboard.conftest import Dashboard, finished_card, start_render
from workers.settings import Settings

LORA = "ink"
PHONE = {"width": 360, "height": 740}
# One kohya-style pair whose cross-attention input is 768 wide: an SD 1.5 LoRA
# (fractal.loras.inspect_lora reads its family from that width).
KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


@dataclass(frozen=True)
class Served(Dashboard):
    other_key: str = ""
    lora_dir: Path = Path()


def _write_lora(path: Path) -> None:
    rng = np.random.default_rng(0)
    save_file({f"{KEY}.lora_down.weight": rng.standard_normal((4, 768), dtype=np.float32),
               f"{KEY}.lora_up.weight": rng.standard_normal((320, 4), dtype=np.float32),
               f"{KEY}.alpha": np.array(4.0, dtype=np.float32)}, str(path))


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory, tiny_sd: Path) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("styles-loras")
    lora_dir = data_dir / "loras"
    lora_dir.mkdir()
    _write_lora(lora_dir / f"{LORA}.safetensors")
    settings = Settings(data_dir=data_dir)
    key = make_key(settings, "styles")
    other = make_key(settings, "someone else")
    with serving(data_dir, SPEC2FRACTAL_AUTH="required", SPEC2FRACTAL_MODELS=str(tiny_sd),
                 SPEC2FRACTAL_LORA_DIR=str(lora_dir)) as api:
        yield Served(base=api.url, key=key, data_dir=data_dir, other_key=other,
                     lora_dir=lora_dir)


def _open_advanced(page: Page) -> None:
    if not page.locator("details.advanced").evaluate("(details) => details.open"):
        page.locator("details.advanced summary").click()


def _own(page: Page):
    return page.locator("#own-style-list")


def test_save_the_form_as_a_style_render_with_it_edit_and_delete_it(
        open_page, dashboard: Served) -> None:
    page = open_page()
    page.get_by_label("Prompt", exact=True).fill("ink wash on soft paper")
    form = page.locator("#create-form")
    form.get_by_label("Negative prompt").fill("blurry")
    _open_advanced(page)
    form.get_by_label("Steps").fill("6")
    page.get_by_role("button", name="Save as style…").click()

    dialog = page.get_by_role("dialog", name="Save as style")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Name")).to_be_focused()
    # The form's prompt becomes the template, each render's own text first.
    expect(dialog.get_by_label("Prompt template")).to_have_value("{prompt}, ink wash on soft paper")
    expect(dialog.get_by_label("Negative prompt")).to_have_value("blurry")
    expect(dialog.get_by_label("Steps")).to_have_value("6")
    dialog.get_by_label("Name").fill("My ink")
    dialog.get_by_label("Description").fill("Black ink, wet paper")
    dialog.get_by_role("button", name="Save style").click()
    expect(dialog).to_be_hidden()

    # Listed apart from the built-in styles, and picked.
    own = _own(page)
    expect(own.locator("label", has_text="My ink")).to_be_visible()
    expect(page.locator("#style-list label", has_text="My ink")).to_have_count(0)
    expect(own.get_by_role("radio", name=re.compile("My ink"))).to_be_checked()
    expect(page.locator("#own-style-empty")).to_be_hidden()
    expect(page.locator("#style-saved")).to_have_text("Saved the style “My ink”.")
    client = dashboard.client()
    saved = client.get("/styles/My ink").json()
    assert saved["source"] == "user"
    assert saved["template"] == "{prompt}, ink wash on soft paper"
    assert (saved["negative_prompt"], saved["steps"], saved["description"]) == (
        "blurry", 6, "Black ink, wet paper")
    assert saved["loras"] == []

    # Usable by name: the render records it, and its job carries the style inlined.
    page.get_by_label("Prompt", exact=True).fill("a fox")
    page.fill("#width", "64")
    page.fill("#height", "64")
    job_id = start_render(page)
    finished_card(page, job_id)
    job = client.get(f"/jobs/{job_id}").json()
    record = job["outputs"][0]["record"]
    assert job["status"] == "succeeded", job
    assert (record["style"], record["user_prompt"], record["steps"]) == ("My ink", "a fox", 6)
    assert job["request"]["style"]["prompt"] == "{prompt}, ink wash on soft paper"
    # The gallery names the style by its name (the job carries it inlined).
    card = page.locator(f'#gallery-list .card[data-job-id="{job_id}"]').first
    expect(card.locator(".meta")).to_contain_text("My ink")
    page.locator("#style-list input[value='']").check()
    card.get_by_role("button", name="Reuse settings").click()
    expect(own.get_by_role("radio", name=re.compile("My ink"))).to_be_checked()

    # Edit: the dialog holds the saved style; its name stays (it is the style's key).
    own.get_by_role("button", name="Edit style My ink").click()
    dialog = page.get_by_role("dialog", name="Edit style “My ink”")
    expect(dialog.get_by_label("Prompt template")).to_have_value("{prompt}, ink wash on soft paper")
    expect(dialog.get_by_label("Name")).to_have_attribute("readonly", "")
    # A template without {prompt}: the server's 422, beside the template.
    dialog.get_by_label("Prompt template").fill("charcoal only")
    dialog.get_by_role("button", name="Save changes").click()
    error = dialog.locator('[data-field="prompt"] .error')
    expect(error).to_be_visible()
    expect(error).to_contain_text("{prompt}")
    expect(dialog.get_by_label("Prompt template")).to_have_attribute("aria-invalid", "true")
    dialog.get_by_label("Prompt template").fill("{prompt}, charcoal")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog).to_be_hidden()
    edited = client.get("/styles/My ink").json()
    assert edited["template"] == "{prompt}, charcoal"
    assert edited["description"] == "Black ink, wet paper"

    # A taken name (the caller's own, or a built-in one: 409) or a bad one (422) is shown
    # beside the name.
    for taken in ("my ink", "Watercolor", "ink/wash"):
        page.get_by_role("button", name="Save as style…").click()
        dialog = page.get_by_role("dialog", name="Save as style")
        dialog.get_by_label("Name").fill(taken)
        dialog.get_by_role("button", name="Save style").click()
        expect(dialog.locator('[data-field="name"] .error')).to_be_visible()
        expect(dialog.get_by_label("Name")).to_have_attribute("aria-invalid", "true")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()

    # Delete, after a confirmation.
    page.once("dialog", lambda confirm: confirm.accept())
    own.get_by_role("button", name="Delete style My ink").click()
    expect(own.locator("label", has_text="My ink")).to_have_count(0)
    expect(page.locator("#style-saved")).to_have_text("Deleted the style “My ink”.")
    assert client.get("/styles/My ink").status_code == 404
    expect(page.locator("#style-list input[value='']")).to_be_checked()


def test_another_key_does_not_see_a_callers_style(open_page, dashboard: Served) -> None:
    created = dashboard.client().post("/styles", json={"name": "Private mood",
                                                       "prompt": "{prompt}, in fog"})
    assert created.status_code == 201, created.text
    page = open_page()
    expect(_own(page).locator("label", has_text="Private mood")).to_be_visible()

    other = open_page(key=False)
    other.fill("#api-key", dashboard.other_key)
    other.press("#api-key", "Enter")
    expect(other.locator("#style-list label", has_text="Watercolor")).to_be_visible()
    expect(other.locator("#own-style-empty")).to_be_visible()
    expect(other.get_by_text("Private mood")).to_have_count(0)
    response = dashboard.client().get("/styles/Private mood", headers=bearer(dashboard.other_key))
    assert response.status_code == 404


def test_lora_picker_lists_the_folder_and_sends_the_sliders_weight(
        open_page, dashboard: Served) -> None:
    page = open_page()
    section = page.get_by_role("group", name="LoRAs (optional)", exact=True)
    # The built-in engine takes none: the section is disabled and says why.
    expect(page.locator("#lora-note")).to_have_text("fractal takes no LoRAs.")
    assert section.evaluate("(section) => section.disabled")
    expect(page.get_by_label("LoRA file")).to_be_disabled()

    page.get_by_role("region", name="Create").get_by_label("Model").select_option("tiny-sd")
    expect(page.locator("#lora-note")).to_be_hidden()
    choice = page.get_by_label("LoRA file")
    expect(choice).to_be_enabled()
    # Name, family and size of the file placed in the folder.
    size = (dashboard.lora_dir / f"{LORA}.safetensors").stat().st_size
    expect(choice.locator("option")).to_have_text([f"{LORA} (sd15, {size / 1024:.0f} KB)"])
    page.get_by_role("button", name="Add LoRA").click()
    weight = page.locator("#lora-list input[type=range]")
    expect(weight).to_be_focused()
    expect(weight).to_have_value("1")
    assert (weight.get_attribute("min"), weight.get_attribute("max"),
            weight.get_attribute("step")) == ("-2", "2", "0.05")
    expect(page.get_by_label(f"LoRA 1 {LORA} weight")).to_have_count(1)
    # Its only file is chosen: nothing more to add.
    expect(page.get_by_role("button", name="Add LoRA")).to_be_disabled()
    weight.fill("0.75")
    expect(page.locator("#lora-list output")).to_have_text("0.75")

    # The request carries the LoRA with the slider's weight.
    page.get_by_label("Prompt", exact=True).fill("a heron")
    page.fill("#width", "64")
    page.fill("#height", "64")
    with page.expect_request(lambda request: request.method == "POST"
                             and request.url.endswith("/generate")) as sent:
        page.get_by_role("button", name="Generate").click()
    body = json.loads(sent.value.post_data or "{}")
    assert body["loras"] == [{"name": LORA, "weight": 0.75}]
    assert body["model"] == "tiny-sd"
    answer = sent.value.response()
    assert answer is not None and answer.status == 202, answer and answer.text()
    job = dashboard.client().get(f"/jobs/{answer.json()['id']}").json()
    assert job["request"]["loras"] == [{"name": LORA, "weight": 0.75}]

    # Saved as a style, the style keeps the form's LoRAs.
    page.get_by_role("button", name="Save as style…").click()
    dialog = page.get_by_role("dialog", name="Save as style")
    expect(dialog.get_by_label(f"{LORA} weight")).to_have_value("0.75")
    dialog.get_by_label("Name").fill("Heron ink")
    dialog.get_by_role("button", name="Save style").click()
    expect(dialog).to_be_hidden()
    saved = dashboard.client().get("/styles/Heron ink").json()
    assert saved["loras"] == [{"name": LORA, "weight": 0.75}]
    expect(_own(page).locator("label", has_text="Heron ink")).to_contain_text(
        f"LoRAs: {LORA} × 0.75")

    # A LoRA gone from the folder: the server's 422 names loras[0].name, shown beside it.
    lora_file = dashboard.lora_dir / f"{LORA}.safetensors"
    lora_file.rename(lora_file.with_name("elsewhere.bin"))
    try:
        page.get_by_role("button", name="Generate").click()
        error = page.locator('#lora-list [data-field="loras.0"] > .error')
        expect(error).to_be_visible()
        expect(error).to_contain_text("LoRA folder")
        expect(weight).to_have_attribute("aria-invalid", "true")
    finally:
        lora_file.with_name("elsewhere.bin").rename(lora_file)

    # Removed: nothing is sent; back on the engine the section is disabled again.
    page.get_by_role("button", name=f"Remove LoRA 1 {LORA}").click()
    expect(page.locator("#lora-list li")).to_have_count(0)
    expect(page.get_by_role("button", name="Add LoRA")).to_be_focused()
    model = page.get_by_role("region", name="Create").get_by_label("Model")
    model.select_option("")
    assert section.evaluate("(section) => section.disabled")

    # The gallery names the job's LoRA; reusing its settings puts the LoRA back.
    page.wait_for_function("""(id) => ['succeeded', 'failed'].includes(document.querySelector(
        `.live-card[data-job-id="${id}"]`)?.dataset.status)""", arg=job["id"])
    page.get_by_role("button", name="Refresh", exact=True).first.click()
    job_id = job["id"]
    card = page.locator(f'#gallery-list .card[data-job-id="{job_id}"]').first
    card.locator("summary", has_text="Parameters").click()
    expect(card.locator("dl.params")).to_contain_text(f"{LORA} × 0.75")
    card.get_by_role("button", name="Reuse settings").click()
    expect(model).to_have_value("tiny-sd")
    expect(page.locator("#lora-list input[type=range]")).to_have_value("0.75")
    assert not section.evaluate("(section) => section.disabled")


def test_style_dialog_and_lora_picker_by_keyboard(open_page) -> None:
    page = open_page()
    page.get_by_role("region", name="Create").get_by_label("Model").select_option("tiny-sd")
    # The picker: choose, add, then the slider moves by its step with the arrow keys.
    page.get_by_label("LoRA file").focus()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Add LoRA")).to_be_focused()
    page.keyboard.press("Enter")
    weight = page.get_by_label(f"LoRA 1 {LORA} weight")
    expect(weight).to_be_focused()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(weight).to_have_value("0.9")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name=f"Remove LoRA 1 {LORA}")).to_be_focused()

    # The dialog: opened with Enter, the name focused, Escape closes it and focus returns.
    opener = page.get_by_role("button", name="Save as style…")
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Save as style")
    expect(dialog.get_by_label("Name")).to_be_focused()
    expect(dialog.get_by_label(f"{LORA} weight")).to_have_value("0.9")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()


def test_a_style_named_with_markup_and_url_characters_is_text_and_editable(
        open_page, dashboard: Served) -> None:
    name = 'Fog #1 <b>"100%"? &amp; ünï'  # '/' is not allowed in a name
    client = dashboard.client()
    assert client.post("/styles", json={"name": name, "prompt": "{prompt}, fog"}).status_code == 201
    page = open_page()
    own = _own(page)
    expect(own.locator("label", has_text=name)).to_be_visible()  # as text, not markup
    assert own.locator("b").count() == 0
    own.get_by_role("button", name=f"Edit style {name}").click()
    dialog = page.get_by_role("dialog", name=f"Edit style “{name}”")
    dialog.get_by_label("Prompt template").fill("{prompt}, thick fog")
    dialog.get_by_role("button", name="Save changes").click()
    expect(dialog).to_be_hidden()
    assert client.get(f"/styles/{quote(name, safe='')}").json()["template"] == "{prompt}, thick fog"
    page.once("dialog", lambda confirm: confirm.accept())
    own.get_by_role("button", name=f"Delete style {name}").click()
    expect(own.locator("label", has_text=name)).to_have_count(0)
    assert all(style["name"] != name for style in client.get("/styles").json()["styles"])


def test_own_styles_and_loras_fit_a_phone_screen(open_page, dashboard: Served) -> None:
    long_name = "A rather long style name that must wrap on a phone screen"
    assert dashboard.client().post("/styles", json={
        "name": long_name, "prompt": "{prompt}, wide", "loras": [{"name": LORA, "weight": 1.5}],
    }).status_code == 201
    page = open_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    expect(_own(page).locator("label", has_text=long_name)).to_contain_text(f"{LORA} × 1.5")
    page.get_by_role("region", name="Create").get_by_label("Model").select_option("tiny-sd")
    page.get_by_role("button", name="Add LoRA").click()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width} px wide"
    boxes = page.evaluate("""() => [...document.querySelectorAll(
        '#style-picker button, #style-picker label, #loras input, #loras select, #loras button')]
        .filter((el) => el.offsetParent !== null)
        .map((el) => { const r = el.getBoundingClientRect();
                       return {id: el.id || el.textContent, left: r.left, right: r.right}; })""")
    assert len(boxes) > 5
    for box in boxes:
        assert box["left"] >= 0 and box["right"] <= PHONE["width"], box
