// The style picker: one radio per style with its sample picture and description. Samples
// are committed JPEGs (scripts/style_samples.py) named by the same slug rule. The caller's
// own styles (source "user", GET /styles) are listed apart, under "Your styles", each with
// Edit and Delete buttons (styleeditor.js does the work).

export function styleSlug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
}

let actions = { onEdit: () => {}, onDelete: () => {} };

function option(value, title, description, sample) {
  const label = document.createElement("label");
  label.className = "style-option";
  const input = document.createElement("input");
  input.type = "radio";
  input.name = "style";
  input.value = value;
  label.append(input);
  if (sample) {
    const img = document.createElement("img");
    img.src = sample;
    img.alt = ""; // decorative: the name and description say what it is
    img.width = 80;
    img.height = 80;
    img.loading = "lazy";
    label.append(img);
  } else {
    const blank = document.createElement("span");
    blank.className = "style-none";
    blank.setAttribute("aria-hidden", "true");
    blank.textContent = value ? [...value][0].toUpperCase() : "∅";
    label.append(blank);
  }
  const text = document.createElement("span");
  text.className = "style-text";
  const name = document.createElement("strong");
  name.textContent = title;
  const about = document.createElement("span");
  about.className = "hint";
  about.textContent = description;
  text.append(name, about);
  label.append(text);
  return label;
}

function button(text, label, onClick) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = "secondary small";
  node.textContent = text;
  node.setAttribute("aria-label", label);
  node.addEventListener("click", onClick);
  return node;
}

// A caller's style: its radio, then Edit and Delete (outside the label, so a click on them
// does not pick the style).
function ownOption(style) {
  const item = document.createElement("li");
  item.className = "style-own";
  const loras = (style.loras ?? []).map((lora) => `${lora.name} × ${lora.weight}`).join(", ");
  const about = [style.description, loras && `LoRAs: ${loras}`].filter(Boolean).join(" · ");
  item.append(option(style.name, style.name, about || style.template, null),
              button("Edit", `Edit style ${style.name}`, () => actions.onEdit(style)),
              button("Delete", `Delete style ${style.name}`, () => actions.onDelete(style)));
  return item;
}

export function setStyleActions({ onEdit, onDelete }) {
  actions = { onEdit, onDelete };
}

export function renderStyles(styles) {
  const chosen = selectedStyle();
  const own = styles.filter((style) => style.source === "user");
  const shared = styles.filter((style) => style.source !== "user");
  // Operator styles have no committed sample: a letter stands in for it.
  document.getElementById("style-list").replaceChildren(
    option("", "No style", "Your prompt as written", null),
    ...shared.map((style) => option(style.name, style.name, style.description,
      style.source === "operator" ? null : `/ui/styles/${styleSlug(style.name)}.jpg`)));
  document.getElementById("own-style-list").replaceChildren(...own.map(ownOption));
  document.getElementById("own-style-empty").hidden = own.length > 0;
  selectStyle(chosen);
}

function radios() {
  return [...document.querySelectorAll('#style-picker input[name="style"]')];
}

export function selectedStyle() {
  return radios().find((input) => input.checked)?.value ?? "";
}

// `name`: a style's name, or (a job's request) an inlined style object.
export function selectStyle(name) {
  const wanted = String((name && typeof name === "object" ? name.name : name) || "");
  const inputs = radios();
  const match = inputs.find((input) => input.value === wanted)
    ?? inputs.find((input) => input.value.toLowerCase() === wanted.toLowerCase()) ?? inputs[0];
  if (match) match.checked = true;
}
