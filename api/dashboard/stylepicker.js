// The style picker: one radio per style with its sample picture and description. Samples
// are committed JPEGs (scripts/style_samples.py) named by the same slug rule.

export function styleSlug(name) {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
}

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
    blank.textContent = "∅";
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

export function renderStyles(styles) {
  const list = document.getElementById("style-list");
  const chosen = selectedStyle();
  list.replaceChildren(option("", "No style", "Your prompt as written", null),
    ...styles.map((style) => option(style.name, style.name, style.description,
                                    `/ui/styles/${styleSlug(style.name)}.jpg`)));
  selectStyle(chosen);
}

export function selectedStyle() {
  return document.querySelector('#style-list input[name="style"]:checked')?.value ?? "";
}

export function selectStyle(name) {
  const inputs = [...document.querySelectorAll('#style-list input[name="style"]')];
  const match = inputs.find((input) => input.value === (name || "")) ?? inputs[0];
  if (match) match.checked = true;
}
