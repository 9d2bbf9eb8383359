// The style editor: "Save as style" keeps the create form's settings under a name (POST
// /styles), and a caller's own style is edited (PUT /styles/{name}) or deleted (DELETE) from
// the style picker. The form's prompt becomes the template: "{prompt}, <form prompt>", so
// each render's own prompt comes first, unless the text already says where it goes with
// {prompt}. A 422 shows beside the dialog's field it names (fielderrors.js); a taken name
// (409) beside the name.

import { ApiError, api } from "./api.js";
import { clearErrors, showErrors } from "./fielderrors.js";
import { number, text } from "./fieldvalues.js";
import { chosenLoras } from "./lorapicker.js";
import { showNotice } from "./notice.js";
import { setStyleActions } from "./stylepicker.js";
import { imageFile } from "./upload.js";

const $ = (id) => document.getElementById(id);
let editing = null; // the style being edited (its StyleInfo); null: a new one
let loras = []; // [{name, weight}] the dialog will save
let onChanged = async () => {};

// The template a form prompt makes.
export function templateFrom(prompt) {
  const text = (prompt ?? "").trim();
  if (!text) return "{prompt}";
  return text.includes("{prompt}") ? text : `{prompt}, ${text}`;
}

function setValue(id, value) {
  $(id).value = value == null ? "" : String(value);
}

function fillLighting(chosen) {
  const select = $("style-form-lighting");
  select.replaceChildren(...[...$("lighting").options].map((option) =>
    Object.assign(document.createElement("option"), {
      value: option.value, textContent: option.value ? option.textContent : "Model default",
    })));
  if (chosen && ![...select.options].some((option) => option.value === chosen)) {
    select.append(Object.assign(document.createElement("option"), { value: chosen,
                                                                     textContent: chosen }));
  }
  select.value = chosen ?? "";
}

function renderLoras() {
  const list = $("style-form-loras");
  list.replaceChildren(...loras.map((lora, index) => {
    const item = document.createElement("li");
    const id = `style-form-lora-${index}`;
    const label = Object.assign(document.createElement("label"), { htmlFor: id });
    label.textContent = `${lora.name} weight`;
    const input = Object.assign(document.createElement("input"), {
      id, type: "number", min: "-4", max: "4", step: "0.05", value: String(lora.weight),
      inputMode: "decimal",
    });
    input.addEventListener("input", () => {
      lora.weight = input.value === "" ? null : Number(input.value);
    });
    const remove = Object.assign(document.createElement("button"), {
      type: "button", className: "secondary small", textContent: "Remove",
    });
    remove.setAttribute("aria-label", `Remove LoRA ${lora.name} from the style`);
    remove.addEventListener("click", () => {
      loras.splice(index, 1);
      renderLoras();
      $("style-form-take-loras").focus();
    });
    item.append(label, input, remove);
    return item;
  }));
  if (!loras.length) {
    list.append(Object.assign(document.createElement("li"), { className: "hint",
                                                              textContent: "None." }));
  }
}

function open(style) {
  editing = style;
  const form = $("style-form");
  clearErrors(form, $("style-form-error"));
  $("style-dialog-title").textContent = style ? `Edit style “${style.name}”` : "Save as style";
  $("style-form-save").textContent = style ? "Save changes" : "Save style";
  // A style's name is its key (PUT's body must name the same one): not renamed here.
  $("style-form-name").readOnly = Boolean(style);
  if (style) {
    setValue("style-form-name", style.name);
    setValue("style-form-prompt", style.template);
    setValue("style-form-negative", style.negative_prompt);
    setValue("style-form-description", style.description);
    setValue("style-form-steps", style.steps);
    setValue("style-form-guidance", style.guidance);
    setValue("style-form-strength", style.strength);
    fillLighting(style.lighting);
    loras = (style.loras ?? []).map((lora) => ({ name: lora.name, weight: lora.weight }));
  } else {
    setValue("style-form-name", "");
    setValue("style-form-prompt", templateFrom($("prompt").value));
    setValue("style-form-negative", $("negative_prompt").value.trim());
    setValue("style-form-description", "");
    setValue("style-form-steps", $("steps").value.trim());
    setValue("style-form-guidance", $("guidance").value.trim());
    // Strength is an image-to-image setting: kept only when the form has an input image.
    setValue("style-form-strength", imageFile() ? $("strength").value : "");
    fillLighting($("lighting").value);
    loras = chosenLoras();
  }
  renderLoras();
  $("style-dialog").showModal();
  (style ? $("style-form-prompt") : $("style-form-name")).focus();
}


function body() {
  const data = {
    name: $("style-form-name").value.trim(),
    prompt: $("style-form-prompt").value.trim(),
    negative_prompt: text("style-form-negative"),
    description: text("style-form-description"),
    steps: number("style-form-steps"),
    guidance: number("style-form-guidance"),
    strength: number("style-form-strength"),
    lighting: text("style-form-lighting"),
    loras: loras.map((lora) => ({ name: lora.name, weight: lora.weight })),
  };
  // What the dialog does not show is kept as it was (PUT replaces the whole style).
  if (editing?.palette) data.palette = editing.palette;
  if (editing?.effect) data.effect = editing.effect;
  return Object.fromEntries(Object.entries(data).filter(([, value]) => value !== undefined));
}

// The library names a style's fields "style.<key>"; the dialog's boxes are named <key>.
function unwrapped(error) {
  const fieldErrors = error.fieldErrors.map((entry) => {
    const loc = entry.loc[0] === "style" && entry.loc.length > 1 ? entry.loc.slice(1)
      : typeof entry.field === "string" && entry.field.startsWith("style.")
        ? [entry.field.slice("style.".length), ...entry.loc.slice(1)] : entry.loc;
    return { ...entry, field: loc[0] ?? entry.field, loc };
  });
  return { fieldErrors, message: error.message };
}

async function save(event) {
  event.preventDefault();
  const form = $("style-form");
  clearErrors(form, $("style-form-error"));
  const button = $("style-form-save");
  button.disabled = true;
  const data = body();
  try {
    if (editing) {
      await api(`/styles/${encodeURIComponent(editing.name)}`, { method: "PUT", json: data });
    } else {
      await api("/styles", { method: "POST", json: data });
    }
    $("style-dialog").close();
    await onChanged(data.name);
    $("style-saved").textContent = `Saved the style “${data.name}”.`;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    const shown = error.status === 409
      ? { fieldErrors: [{ field: "name", loc: ["name"], message: error.message }],
          message: error.message }
      : unwrapped(error);
    const field = showErrors(form, shown, $("style-form-error"));
    field?.focus();
  } finally {
    button.disabled = false;
  }
}

async function remove(style) {
  // The browser's own confirmation: modal, keyboard-friendly, read by screen readers.
  if (!window.confirm(`Delete the style “${style.name}”? Renders made with it stay.`)) return;
  try {
    await api(`/styles/${encodeURIComponent(style.name)}`, { method: "DELETE" });
    await onChanged(null);
    $("style-saved").textContent = `Deleted the style “${style.name}”.`;
    $("style-save").focus();
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showNotice(`The style could not be deleted: ${error.message}`);
  }
}

// `changed(name)`: reloads the styles (and picks `name`, the one just saved).
export function installStyleEditor({ changed }) {
  onChanged = changed;
  setStyleActions({ onEdit: open, onDelete: remove });
  $("style-save").addEventListener("click", () => open(null));
  $("style-cancel").addEventListener("click", () => $("style-dialog").close());
  $("style-form-take-loras").addEventListener("click", () => {
    loras = chosenLoras();
    renderLoras();
  });
  $("style-form").addEventListener("submit", save);
}
