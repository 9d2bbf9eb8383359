// The LoRA picker: the server's LoRA files (GET /loras: name, family, size) in a select, and
// the chosen ones as a list, each with a weight slider (-2 – 2, step 0.05, default 1) and a
// Remove button; a request gets them as `loras: [{name, weight}]`. A model that takes no
// LoRAs (GET /models says `loras: false`; the built-in engine) disables the section with a
// note, and nothing is sent. Each entry carries data-field="loras.<i>", so a 422 naming
// loras[0].weight shows beside that slider (fielderrors.js).

import { chosenModel } from "./references.js";

const $ = (id) => document.getElementById(id);
const MAX_LORAS = 8; // fractal.loras.MAX_LORAS
let files = [];
let serial = 0;
const chosen = []; // {name, root, weight: <input type=range>}

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

function describeFile(file) {
  return [file.family ?? "unknown family", formatSize(file.size)].filter(Boolean).join(", ");
}

function enabled() {
  return !$("loras").disabled;
}

function fillChoices() {
  const select = $("lora-choice");
  const keep = select.value;
  const taken = new Set(chosen.map((entry) => entry.name.toLowerCase()));
  const options = files.filter((file) => !taken.has(file.name.toLowerCase())).map((file) =>
    element("option", { value: file.name, textContent: `${file.name} (${describeFile(file)})` }));
  select.replaceChildren(...options);
  if (options.some((option) => option.value === keep)) select.value = keep;
  $("lora-empty").hidden = files.length > 0;
  $("lora-pick").hidden = !files.length; // nothing to choose: the line above says so
  $("lora-add").disabled = !options.length || chosen.length >= MAX_LORAS;
  select.disabled = !options.length;
}

// Labels, ids and data-field follow each entry's place: loras.0 is the first.
function renumber() {
  chosen.forEach((entry, index) => {
    const n = index + 1;
    entry.root.dataset.field = `loras.${index}`;
    entry.error.id = `loras.${index}-error`;
    entry.weightBox.dataset.field = `loras.${index}.weight`;
    entry.weightError.id = `loras.${index}.weight-error`;
    entry.weight.setAttribute("aria-describedby", `loras.${index}-error loras.${index}.weight-error`);
    entry.label.replaceChildren(
      element("span", { className: "visually-hidden", textContent: `LoRA ${n} ` }),
      entry.name, " ", element("span", { className: "hint", textContent: "weight (-2 – 2)" }));
    entry.remove.textContent = "Remove";
    entry.remove.setAttribute("aria-label", `Remove LoRA ${n} ${entry.name}`);
  });
  fillChoices();
}

function addEntry(name, weight = 1) {
  if (chosen.length >= MAX_LORAS) return null;
  const id = `lora-weight-${++serial}`;
  const entry = { name };
  entry.weight = element("input", { id, type: "range", min: "-2", max: "2", step: "0.05",
                                    value: String(weight) });
  const output = element("output", { textContent: entry.weight.value });
  output.htmlFor = id;
  entry.weight.addEventListener("input", () => {
    output.textContent = entry.weight.value;
  });
  entry.label = element("label", { htmlFor: id });
  entry.weightError = element("p", { className: "error", hidden: true });
  entry.weightBox = element("div", { className: "field" }, [
    entry.label, element("div", { className: "inline" }, [entry.weight, output]),
    entry.weightError]);
  entry.error = element("p", { className: "error", hidden: true });
  entry.remove = element("button", { type: "button", className: "secondary small" });
  entry.remove.addEventListener("click", () => removeEntry(entry));
  entry.root = element("li", { className: "lora-entry" }, [entry.weightBox, entry.remove,
                                                          entry.error]);
  chosen.push(entry);
  $("lora-list").append(entry.root);
  renumber();
  return entry;
}

function removeEntry(entry) {
  const index = chosen.indexOf(entry);
  chosen.splice(index, 1);
  entry.root.remove();
  renumber();
  (chosen[index]?.weight ?? ($("lora-add").disabled ? $("lora-choice") : $("lora-add"))).focus();
}

// Whether the chosen model takes LoRAs; the section says why not when it does not.
export function applyLoraCapability() {
  const model = chosenModel();
  const takes = Boolean(model?.loras);
  $("loras").disabled = !takes;
  const unknown = "Offered once the server lists its models (that needs your API key).";
  $("lora-note").textContent = takes ? "" : model ? `${model.id} takes no LoRAs.` : unknown;
  $("lora-note").hidden = takes;
}

// GET /loras's answer: the files offered.
export function setLoraFiles(list) {
  files = Array.isArray(list?.loras) ? list.loras : [];
  fillChoices();
}

// The chosen LoRAs as a request's `loras`; undefined when none (or the model takes none).
export function loraParams() {
  if (!enabled() || !chosen.length) return undefined;
  return chosen.map((entry) => ({ name: entry.name, weight: Number(entry.weight.value) }));
}

// The chosen LoRAs, also while the section is disabled (a style keeps them for a model that
// takes them).
export function chosenLoras() {
  return chosen.map((entry) => ({ name: entry.name, weight: Number(entry.weight.value) }));
}

// Puts a request's LoRAs back (reuse); names the server no longer has are kept, so its 422
// says so.
export function setLoras(loras) {
  for (const entry of [...chosen]) entry.root.remove();
  chosen.length = 0;
  for (const lora of Array.isArray(loras) ? loras : []) {
    if (lora && typeof lora.name === "string") addEntry(lora.name, Number(lora.weight ?? 1));
  }
  renumber();
}

export function installLoraPicker() {
  $("lora-add").addEventListener("click", () => {
    const name = $("lora-choice").value;
    if (name) addEntry(name)?.weight.focus();
  });
  $("model").addEventListener("change", applyLoraCapability);
  fillChoices();
  applyLoraCapability();
}
