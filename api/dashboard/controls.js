// Control units (keep an image's structure): up to four, each with a type from the chosen
// model's controls, an image, scale, start and end sliders and, for canny, the preprocess
// switch and a live preview of the edges from POST /controls/preview (the same
// preprocessing a render uses). Each unit's fields carry data-field="control.<i>.<key>", so
// a 422 naming control.0.type is shown beside that select (fielderrors.js).

import { ApiError, apiBlob } from "./api.js";
import { describeFile, installPicker, readDataUrl, showThumbnail } from "./imagepick.js";

const $ = (id) => document.getElementById(id);
const MAX_UNITS = 4; // fractal.references.MAX_CONTROLS
const PREPROCESSORS = new Set(["canny"]); // fractal.references.PREPROCESSORS
const TYPE_NAMES = {
  canny: "Canny edges", depth: "Depth map", pose: "Pose", lineart: "Line art",
  tile: "Tile", image: "Image structure",
};
let types = [];
let serial = 0;
const units = []; // {root, type, file, dataUrl, preview: AbortController | null, ...}

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function slider(unit, key, { min, max, step, value }) {
  const id = `${unit.id}-${key}`;
  const input = element("input", { id, type: "range", min, max, step, value: String(value) });
  const output = element("output", { textContent: String(value) });
  output.htmlFor = id;
  input.addEventListener("input", () => {
    output.textContent = input.value;
  });
  const box = element("div", { className: "field" }, [
    element("label", { htmlFor: id }),
    element("div", { className: "inline" }, [input, output]),
    element("p", { className: "error", hidden: true }),
  ]);
  box.dataset.key = key;
  unit[key] = input;
  return box;
}

function fillTypes(select) {
  const keep = select.value;
  select.replaceChildren(...types.map((type) => element(
    "option", { value: type, textContent: `${TYPE_NAMES[type] ?? type} (${type})` })));
  if (types.includes(keep)) select.value = keep;
}

function newUnit() {
  const unit = { id: `control-unit-${++serial}`, file: null, dataUrl: null, preview: null };
  unit.type = element("select", { id: `${unit.id}-type` });
  fillTypes(unit.type);
  unit.image = element("input", { id: `${unit.id}-image`, type: "file",
                                  accept: "image/png,image/jpeg,image/webp" });
  unit.thumb = element("img");
  unit.edges = element("img", { className: "control-edges" });
  unit.chosen = element("figure", { className: "image-chosen", hidden: true }, [unit.thumb]);
  unit.edgesBox = element("figure", { className: "image-chosen", hidden: true }, [
    unit.edges, element("figcaption", { textContent: "Edges a render follows" })]);
  unit.status = element("p", { className: "hint" });
  unit.status.setAttribute("role", "status");
  const zone = element("div", { className: "drop-zone" }, [
    element("label", { htmlFor: unit.image.id }), unit.image,
    element("div", { className: "control-images" }, [unit.chosen, unit.edgesBox]),
    unit.status]);
  unit.preprocess = element("input", { id: `${unit.id}-preprocess`, type: "checkbox",
                                       checked: true });
  unit.preprocessBox = element("div", { className: "field" }, [
    element("div", { className: "inline" }, [unit.preprocess,
                                             element("label", { htmlFor: unit.preprocess.id })]),
    element("p", { className: "error", hidden: true })]);
  unit.preprocessBox.dataset.key = "preprocess";
  unit.remove = element("button", { type: "button", className: "secondary small" });
  const typeBox = element("div", { className: "field" }, [
    element("label", { htmlFor: unit.type.id }), unit.type,
    element("p", { className: "error", hidden: true })]);
  typeBox.dataset.key = "type";
  const imageBox = element("div", { className: "field" }, [
    zone, element("p", { className: "error", hidden: true })]);
  imageBox.dataset.key = "image";
  unit.legend = element("legend");
  unit.error = element("p", { className: "error", hidden: true });
  unit.root = element("li", { className: "control-unit" }, [element("fieldset", {}, [
    unit.legend, typeBox, imageBox,
    element("div", { className: "row" }, [
      slider(unit, "scale", { min: "0", max: "2", step: "0.05", value: 1 }),
      slider(unit, "start", { min: "0", max: "1", step: "0.05", value: 0 }),
      slider(unit, "end", { min: "0", max: "1", step: "0.05", value: 1 })]),
    unit.preprocessBox, unit.error, unit.remove])]);

  installPicker({ zone, input: unit.image, onFile: (file, error) => choose(unit, file, error) });
  unit.type.addEventListener("change", () => refresh(unit));
  unit.preprocess.addEventListener("change", () => refresh(unit));
  unit.remove.addEventListener("click", () => removeUnit(unit));
  return unit;
}

function choose(unit, file, error) {
  const message = unit.image.closest(".field").querySelector(":scope > .error");
  message.textContent = error || "";
  message.hidden = !error;
  if (error) return;
  unit.file = file;
  unit.dataUrl = file ? readDataUrl(file) : null;
  unit.dataUrl?.catch(() => {});
  showThumbnail(unit.thumb, file);
  unit.chosen.hidden = !file;
  refresh(unit);
}

// The canny preview follows the image, the type and the preprocess switch.
async function refresh(unit) {
  const canny = PREPROCESSORS.has(unit.type.value);
  unit.preprocessBox.hidden = !canny;
  unit.preview?.abort();
  unit.preview = null;
  const wanted = canny && unit.preprocess.checked && unit.file;
  if (!wanted) {
    showThumbnail(unit.edges, null);
    unit.edgesBox.hidden = true;
    unit.status.textContent = unit.file ? `${describeFile(unit.file)}` : "";
    return;
  }
  const controller = new AbortController();
  unit.preview = controller;
  unit.status.textContent = "Finding edges…";
  try {
    const image = await unit.dataUrl;
    const blob = await apiBlob("/controls/preview", {
      method: "POST", json: { type: unit.type.value, image, preprocess: true },
      signal: controller.signal,
    });
    if (controller.signal.aborted) return;
    showThumbnail(unit.edges, blob);
    unit.edgesBox.hidden = false;
    unit.status.textContent = `${describeFile(unit.file)}; edges shown beside it.`;
  } catch (error) {
    if (error.name === "AbortError") return;
    if (!(error instanceof ApiError) && !(error instanceof DOMException)) throw error;
    unit.edgesBox.hidden = true;
    unit.status.textContent = `No edge preview: ${error.message}`;
  }
}

// Labels, ids and data-field follow the unit's place: control.0 is the first unit.
function renumber() {
  units.forEach((unit, index) => {
    const n = index + 1;
    unit.legend.textContent = `Control ${n}`;
    unit.root.dataset.field = `control.${index}`;
    unit.error.id = `control.${index}-error`;
    for (const box of unit.root.querySelectorAll("[data-key]")) {
      box.dataset.field = `control.${index}.${box.dataset.key}`;
      box.querySelector(":scope > .error").id = `control.${index}.${box.dataset.key}-error`;
    }
    // Seen: "Scale (0 – 2)" under the unit's legend; heard: "Control 2 Scale (0 – 2)".
    const label = (input, text, hint = "") => {
      unit.root.querySelector(`label[for="${input.id}"]`).replaceChildren(
        element("span", { className: "visually-hidden", textContent: `Control ${n} ` }), text,
        ...(hint ? [" ", element("span", { className: "hint", textContent: hint })] : []));
    };
    label(unit.type, "Type");
    label(unit.image, "Image");
    label(unit.scale, "Scale", "(0 – 2)");
    label(unit.start, "Start", "(0 – 1)");
    label(unit.end, "End", "(0 – 1)");
    label(unit.preprocess, "Find the edges (Canny preprocessing)");
    unit.thumb.alt = `Control ${n} image`;
    unit.edges.alt = `Control ${n} Canny edges`;
    unit.remove.textContent = `Remove control ${n}`;
  });
  $("control-add").disabled = !types.length || units.length >= MAX_UNITS;
}

function addUnit() {
  const unit = newUnit();
  units.push(unit);
  $("control-list").append(unit.root);
  renumber();
  refresh(unit);
  unit.type.focus();
}

function removeUnit(unit) {
  unit.preview?.abort();
  showThumbnail(unit.thumb, null);
  showThumbnail(unit.edges, null);
  const index = units.indexOf(unit);
  units.splice(index, 1);
  unit.root.remove();
  renumber();
  (units[index]?.type ?? $("control-add")).focus();
}

// The chosen model's control types (GET /models); none: the section is disabled, `note`
// says why.
export function setControlTypes(list, note) {
  types = [...list];
  $("controls").disabled = !types.length;
  $("control-note").textContent = types.length ? "" : note;
  $("control-note").hidden = Boolean(types.length);
  for (const unit of units) {
    fillTypes(unit.type);
    refresh(unit);
  }
  renumber();
}

// Every unit, as POST /generate's `control` list (images as data URLs). A unit still
// without an image is sent too: the server's 422 then names it (control.<i>.image) and the
// message shows beside that unit, the one place the rules live.
export async function controlParams() {
  if ($("controls").disabled) return [];
  return Promise.all(units.map(async (unit) => {
    const entry = {
      type: unit.type.value, image: (await unit.dataUrl) ?? undefined,
      scale: Number(unit.scale.value),
      start: Number(unit.start.value), end: Number(unit.end.value),
    };
    if (PREPROCESSORS.has(entry.type)) entry.preprocess = unit.preprocess.checked;
    return entry;
  }));
}

export function installControls() {
  $("control-add").addEventListener("click", addUnit);
  renumber();
}
