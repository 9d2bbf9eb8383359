// Outpainting: extend the input's canvas on the sides ticked by N px (a multiple of 8, as
// the engine renders) → the request's `expand`; the new canvas size is shown as it changes.

import { imageSize, onMaskChange } from "./maskpaint.js";

const $ = (id) => document.getElementById(id);
export const SIDES = ["left", "right", "top", "bottom"];

function pixels() {
  const text = $("expand-by").value.trim();
  return text === "" ? NaN : Number(text);
}

function ticked() {
  return SIDES.filter((side) => $(`expand-${side}`).checked);
}

export function expandOn() {
  return Boolean(imageSize()) && ticked().length > 0;
}

// {left, right, top, bottom} of the sides ticked, or undefined for none. An amount that is
// not a multiple of 8 is sent as typed: the server's 422 names the side.
export function expandParams() {
  if (!expandOn()) return {};
  const by = pixels();
  return { expand: Object.fromEntries(ticked().map((side) => [side, by])) };
}

function showSize() {
  const size = imageSize();
  const line = $("expand-size");
  if (!size || !ticked().length) {
    line.textContent = size ? `Canvas: ${size[0]} × ${size[1]} (not extended).` : "";
    return;
  }
  const by = pixels();
  if (!Number.isFinite(by)) {
    line.textContent = "Give the number of pixels to add.";
    return;
  }
  const sides = new Set(ticked());
  const width = size[0] + by * (sides.has("left") + sides.has("right"));
  const height = size[1] + by * (sides.has("top") + sides.has("bottom"));
  line.textContent = `New canvas: ${width} × ${height} (from ${size[0]} × ${size[1]}).`;
}

export function clearExpand() {
  for (const side of SIDES) $(`expand-${side}`).checked = false;
  showSize();
}

export function installOutpaint() {
  for (const side of SIDES) $(`expand-${side}`).addEventListener("change", showSize);
  $("expand-by").addEventListener("input", showSize);
  onMaskChange(showSize); // a new input image: its size
  showSize();
}
