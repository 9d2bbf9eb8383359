// Two images side by side, with their parameters; the ones that differ are marked.

import { describe, parameterList } from "./gallery.js";

const $ = (id) => document.getElementById(id);
let picked = []; // [{box, entry}], oldest first, at most two

function updateButton() {
  const button = $("compare-open");
  button.textContent = `Compare selected (${picked.length} of 2)`;
  button.disabled = picked.length !== 2;
}

export function pickForCompare(box, entry) {
  picked = picked.filter((pick) => pick.box !== box && pick.box.isConnected);
  if (box.checked) {
    picked.push({ box, entry });
    if (picked.length > 2) picked.shift().box.checked = false; // keep the latest two
  }
  updateButton();
}

export function resetCompare() {
  picked = [];
  updateButton();
}

function differing(first, second) {
  const keys = new Set([...describe(first), ...describe(second)].map((row) => row.key));
  const value = (params, key) => JSON.stringify(describe(params).find((row) => row.key === key)?.value ?? null);
  return new Set([...keys].filter((key) => value(first, key) !== value(second, key)));
}

function side(entry, diff, name) {
  const figure = document.createElement("figure");
  figure.className = "compare-side";
  const img = document.createElement("img");
  img.src = entry.url;
  img.alt = `${name}: ${entry.caption}`;
  const caption = document.createElement("figcaption");
  caption.textContent = `${name}: ${entry.caption}`;
  figure.append(img, caption, parameterList(entry.params, diff));
  return figure;
}

export function installCompare() {
  const dialog = $("compare-dialog");
  $("compare-open").addEventListener("click", () => {
    if (picked.length !== 2) return;
    const [first, second] = picked.map((pick) => pick.entry);
    const diff = differing(first.params, second.params);
    $("compare-body").replaceChildren(side(first, diff, "Left"), side(second, diff, "Right"));
    dialog.showModal();
    $("compare-close").focus();
  });
  $("compare-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => $("compare-open").focus());
}
