// The style reference (render in the style of a picture: style_image, style_strength,
// style_mode) and what the chosen model takes: GET /models says, per model, whether it takes
// a style reference and which control types; a section the model cannot use is disabled
// with a note, and sends nothing.

import { controlParams, setControlTypes } from "./controls.js";
import { describeFile, installPicker, readDataUrl, showThumbnail } from "./imagepick.js";

const $ = (id) => document.getElementById(id);
let chosen = null; // {file, dataUrl: Promise<string>}
let clearInput = () => {};
let models = [];

function setStyleImage(file, error) {
  const message = $("style_image-error");
  message.textContent = error || "";
  message.hidden = !error;
  if (error) return;
  chosen = file ? { file, dataUrl: readDataUrl(file) } : null;
  chosen?.dataUrl.catch(() => {}); // read again (and reported) on submit
  showThumbnail($("style-preview"), file);
  $("style-chosen").hidden = !file;
  $("style-clear").hidden = !file;
  $("style-name").textContent = file ? describeFile(file) : "";
  if (!file) clearInput();
}

function styleEnabled() {
  return !$("style-reference").disabled;
}

// The chosen model's entry in GET /models ("" is the server's default); null until loaded.
export function chosenModel() {
  const id = $("model").value;
  return models.find((model) => (id ? model.id === id : model.default)) ?? null;
}

function applyCapabilities() {
  const model = chosenModel();
  const style = Boolean(model?.style_reference);
  $("style-reference").disabled = !style;
  // Not loaded yet (or no key): nothing is offered until GET /models says what is.
  const unknown = "Offered once the server lists its models (that needs your API key).";
  $("style-note").textContent = style ? "" : model ? `${model.id} takes no style reference.`
    : unknown;
  $("style-note").hidden = style;
  setControlTypes(model?.controls ?? [], model ? `${model.id} takes no control images.`
    : unknown);
}

// GET /models's answer; called again whenever it is loaded.
export function setModelCapabilities(list) {
  models = list.models ?? [];
  applyCapabilities();
}

// The reference parameters of a request: data URLs, read from the chosen files.
export async function referenceParams() {
  const params = {};
  if (chosen && styleEnabled()) {
    params.style_image = await chosen.dataUrl;
    params.style_strength = Number($("style_strength").value);
    params.style_mode = $("style_mode").value;
  }
  const control = await controlParams();
  if (control.length) params.control = control;
  return params;
}

export function installReferences() {
  clearInput = installPicker({ zone: $("style-drop"), input: $("style_image"),
                               onFile: setStyleImage });
  $("style-clear").addEventListener("click", () => {
    setStyleImage(null, null);
    $("style_image").focus();
  });
  const strength = () => {
    $("style_strength-value").textContent = $("style_strength").value;
  };
  $("style_strength").addEventListener("input", strength);
  strength();
  $("model").addEventListener("change", applyCapabilities);
  applyCapabilities();
}
