// The image-to-image input: drag and drop or a file picker; one image at a time. The
// strength slider is only enabled while an image is chosen, as are the mask painter and
// the outpaint sides (both need the image to edit).

import { setMaskImage } from "./maskpaint.js";
import { clearExpand } from "./outpaint.js";

const TYPES = ["image/png", "image/jpeg", "image/webp"];
let chosen = null;
let previewUrl = null;

const $ = (id) => document.getElementById(id);

export function imageFile() {
  return chosen;
}

export function setImage(file) {
  const error = $("image-error");
  if (file && !TYPES.includes(file.type)) {
    error.textContent = `${file.name || "That file"} is not a PNG, JPEG or WEBP image.`;
    error.hidden = false;
    return;
  }
  error.hidden = true;
  chosen = file || null;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = chosen ? URL.createObjectURL(chosen) : null;
  $("image-chosen").hidden = !chosen;
  $("image-clear").hidden = !chosen;
  $("image-preview").src = previewUrl || "";
  $("image-name").textContent = chosen ? `${chosen.name} (${Math.round(chosen.size / 1024)} KB)` : "";
  $("strength").disabled = !chosen;
  $("image-edit").hidden = !chosen;
  setMaskImage(chosen);
  if (!chosen) {
    $("image").value = "";
    clearExpand();
  }
}

export function installUpload() {
  const zone = $("drop-zone");
  $("image").addEventListener("change", (event) => setImage(event.target.files[0] || null));
  $("image-clear").addEventListener("click", () => {
    setImage(null);
    $("image").focus();
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file) setImage(file);
  });
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = $("strength").value;
  });
}
