// The create form: sizes, seed lock, palette, texture; its values as request parameters and
// back (to refine an earlier render); submitting it queues a job and hands it to `onJob`.

import { ApiError } from "./api.js";
import { clearErrors, showErrors } from "./fielderrors.js";
import { number, text } from "./fieldvalues.js";
import { submitJob } from "./jobs.js";
import { loraParams, setLoras } from "./lorapicker.js";
import { maskParams } from "./maskpaint.js";
import { expandParams } from "./outpaint.js";
import { referenceParams } from "./references.js";
import { selectStyle, selectedStyle } from "./stylepicker.js";
import { imageFile, setImage } from "./upload.js";

const $ = (id) => document.getElementById(id);
let maxSeed = 2 ** 32 - 1;
let maxColors = 16;

// Up to 4K on the long side; every side a multiple of 8, as the engine requires.
export const SIZE_PRESETS = [
  ["Square", [[512, 512], [768, 768], [1024, 1024], [2048, 2048], [4096, 4096, "4K"]]],
  ["Portrait", [[512, 768], [768, 1152], [1080, 1920, "Full HD"], [2160, 3840, "4K UHD"]]],
  ["Landscape", [[768, 512], [1152, 768], [1920, 1080, "Full HD"], [3840, 2160, "4K UHD"]]],
];

function fillSizePresets() {
  const select = $("size-preset");
  for (const [group, sizes] of SIZE_PRESETS) {
    const optgroup = document.createElement("optgroup");
    optgroup.label = group;
    for (const [width, height, name] of sizes) {
      const option = document.createElement("option");
      option.value = `${width}x${height}`;
      option.textContent = `${width} × ${height}${name ? ` ${name}` : ""}`;
      option.setAttribute("aria-label", `${group} ${width} by ${height}${name ? ` ${name}` : ""}`);
      optgroup.append(option);
    }
    select.append(optgroup);
  }
  select.addEventListener("change", () => {
    if (select.value === "custom") return;
    const [width, height] = select.value.split("x");
    $("width").value = width;
    $("height").value = height;
  });
  const matchPreset = () => {
    const value = `${$("width").value}x${$("height").value}`;
    select.value = [...select.options].some((option) => option.value === value) ? value : "custom";
  };
  $("width").addEventListener("input", matchPreset);
  $("height").addEventListener("input", matchPreset);
  matchPreset();
}

// -- seed ------------------------------------------------------------------------------

export function randomSeed() {
  const value = crypto.getRandomValues(new Uint32Array(1))[0];
  return value % (maxSeed + 1);
}

function seedLocked() {
  return $("seed-lock").getAttribute("aria-pressed") === "true";
}

function lockSeed(locked) {
  const button = $("seed-lock");
  button.setAttribute("aria-pressed", String(locked));
  button.textContent = locked ? "Seed locked" : "Lock seed";
}

function installSeed() {
  $("seed").max = String(maxSeed);
  $("seed").value = String(randomSeed());
  $("seed-lock").addEventListener("click", () => lockSeed(!seedLocked()));
  $("seed-new").addEventListener("click", () => {
    $("seed").value = String(randomSeed());
  });
  // Typing a seed means wanting that seed.
  $("seed").addEventListener("input", () => lockSeed(true));
}

// -- palette ---------------------------------------------------------------------------

function renumberColors() {
  [...$("color-list").children].forEach((item, index) => {
    item.querySelector("label").textContent = `Colour ${index + 1}`;
    item.querySelector("button").setAttribute("aria-label", `Remove colour ${index + 1}`);
  });
  $("color-add").disabled = $("color-list").children.length >= maxColors;
}

export function addColor(value) {
  const list = $("color-list");
  const item = document.createElement("li");
  const id = `color-${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  const input = document.createElement("input");
  input.type = "color";
  input.id = id;
  input.value = value;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "secondary small";
  remove.textContent = "Remove";
  remove.addEventListener("click", () => {
    const next = item.nextElementSibling?.querySelector("input") ?? $("color-add");
    item.remove();
    renumberColors();
    next.focus();
  });
  item.append(label, input, remove);
  list.append(item);
  renumberColors();
  return input;
}

const STARTER_COLORS = ["#1d4ed8", "#f59e0b", "#0f766e", "#be123c", "#7c3aed", "#f8fafc"];

function installPalette() {
  $("color-add").addEventListener("click", () => {
    const count = $("color-list").children.length;
    addColor(STARTER_COLORS[count % STARTER_COLORS.length]).focus();
  });
}

function setColors(colors) {
  $("color-list").replaceChildren();
  for (const color of colors || []) addColor(toHex(color));
  renumberColors();
}

// <input type=color> takes only #rrggbb; the API also accepts #rgb and CSS names.
function toHex(color) {
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = "#000000";
  probe.fillStyle = String(color);
  return probe.fillStyle.startsWith("#") ? probe.fillStyle : "#000000";
}

// -- texture ---------------------------------------------------------------------------

function installTexture() {
  const sync = () => {
    $("texture").disabled = !$("texture-on").checked;
    $("texture-value").textContent = $("texture").value;
  };
  $("texture-on").addEventListener("change", sync);
  $("texture").addEventListener("input", sync);
  sync();
}

// -- values ------------------------------------------------------------------------------

// The request parameters the form describes; undefined = left to the server's defaults.
export function readParams({ newSeed = !seedLocked() } = {}) {
  if (newSeed) $("seed").value = String(randomSeed());
  const colors = [...$("color-list").querySelectorAll("input[type=color]")].map((input) => input.value);
  const image = imageFile();
  const prompt = text("prompt");
  // Inpainting and outpainting edit the input at its own size: no width or height is sent.
  const edit = image ? { ...maskParams(), ...expandParams() } : {};
  const editing = Object.keys(edit).length > 0;
  return {
    prompt,
    negative_prompt: text("negative_prompt"),
    style: selectedStyle() || undefined,
    width: editing ? undefined : number("width"),
    height: editing ? undefined : number("height"),
    seed: number("seed"),
    lighting: text("lighting"),
    model: text("model"),
    colors: colors.length ? colors : undefined,
    texture: $("texture-on").checked ? Number($("texture").value) : undefined,
    strength: image ? Number($("strength").value) : undefined,
    steps: number("steps"),
    guidance: number("guidance"),
    loras: loraParams(),
    n: number("n"),
    output_format: $("output_format").value,
    input_type: image ? (prompt ? "hybrid" : "image") : "text",
    ...edit,
  };
}

// A batch item's parameters: the form's, as text-to-image (a batch carries no files); a
// random seed per item unless the seed is locked.
export function batchItemParams() {
  const params = readParams({ newSeed: false });
  if (!seedLocked()) delete params.seed;
  params.width = number("width"); // left out of an edit, which keeps its input's size
  params.height = number("height");
  for (const name of ["strength", "mask", "mask_blur", "inpaint_area", "padding", "expand"]) {
    delete params[name];
  }
  params.input_type = "text";
  return params;
}

function setValue(id, value) {
  $(id).value = value == null ? "" : String(value);
}

// Puts an earlier request's parameters back in the form (one-click refine).
export function fillParams(params, { keepSeed = true } = {}) {
  setValue("prompt", params.prompt ?? params.content);
  setValue("negative_prompt", params.negative_prompt);
  selectStyle(params.style);
  setValue("width", params.width ?? 512);
  setValue("height", params.height ?? 512);
  $("width").dispatchEvent(new Event("input"));
  if (keepSeed && params.seed != null) {
    setValue("seed", params.seed);
    lockSeed(true);
  } else {
    setValue("seed", randomSeed());
    lockSeed(false);
  }
  setValue("lighting", params.lighting);
  if (params.model && ![...$("model").options].some((option) => option.value === params.model)) {
    setValue("model", "");
  } else {
    setValue("model", params.model);
  }
  // What the model takes (style reference, controls, LoRAs) follows it.
  $("model").dispatchEvent(new Event("change"));
  setColors(params.colors);
  $("texture-on").checked = params.texture != null;
  if (params.texture != null) setValue("texture", params.texture);
  $("texture-on").dispatchEvent(new Event("change"));
  if (params.strength != null) {
    setValue("strength", params.strength);
    $("strength-value").textContent = $("strength").value;
  }
  setValue("steps", params.steps);
  setValue("guidance", params.guidance);
  setLoras(params.loras);
  setValue("n", params.n ?? 1);
  setValue("output_format", params.output_format || "png");
}

export function setMaxima(options) {
  maxSeed = options.max_seed ?? maxSeed;
  maxColors = options.max_colors ?? maxColors;
  for (const id of ["width", "height"]) $(id).max = String(options.max_side ?? 4096);
  $("steps").max = String(options.max_steps ?? 150);
  $("n").max = String(options.max_n ?? 16);
  const lighting = $("lighting");
  for (const name of options.lighting || []) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name[0].toUpperCase() + name.slice(1);
    lighting.append(option);
  }
  $("seed").max = String(maxSeed);
}

export function setModels(models) {
  for (const id of ["model", "filter-model"]) {
    const select = $(id);
    const chosen = select.value;
    select.replaceChildren(select.options[0]);
    for (const model of models.models) {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = model.default ? `${model.id} (default)` : model.id;
      select.append(option);
    }
    select.value = chosen;
  }
}

export async function submitParams(params, image, onJob) {
  const job = await submitJob(params, image);
  onJob(job, params, image);
  return job;
}

export function installForm({ onJob }) {
  fillSizePresets();
  installSeed();
  installPalette();
  installTexture();
  const form = $("create-form");
  const button = $("generate");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form, $("form-error"));
    button.disabled = true;
    button.textContent = "Sending…";
    try {
      // The style reference and control units are read (as data URLs) only to submit.
      await submitParams({ ...readParams(), ...(await referenceParams()) }, imageFile(), onJob);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const field = showErrors(form, error, $("form-error"));
      if (field) {
        field.closest("details")?.setAttribute("open", "");
        field.focus();
      }
    } finally {
      button.disabled = false;
      button.textContent = "Generate";
    }
  });
}

export { setImage };
