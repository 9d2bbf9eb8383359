// One reference image picked by a file input or a drop (the style reference, a control
// unit's image): the type checked, a thumbnail from a blob URL, and the file as a data URL
// for POST /generate's JSON body.

export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];

export function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => resolve(reader.result));
    reader.addEventListener("error", () => reject(reader.error));
    reader.readAsDataURL(file);
  });
}

export function describeFile(file) {
  return `${file.name || "image"} (${Math.max(1, Math.round(file.size / 1024))} KB)`;
}

// Wires `input` (type=file) and the drop `zone` to `onFile(file | null, error)`; returns
// `clear()`, which forgets the file input's own choice.
export function installPicker({ zone, input, onFile }) {
  const take = (file) => {
    if (file && !IMAGE_TYPES.includes(file.type)) {
      onFile(null, `${file.name || "That file"} is not a PNG, JPEG or WEBP image.`);
      return;
    }
    onFile(file || null, null);
  };
  input.addEventListener("change", () => take(input.files[0] || null));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    if (!input.disabled) zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file && !input.disabled) take(file);
  });
  return () => {
    input.value = "";
  };
}

// A thumbnail <img> showing `file` (or nothing); the previous blob URL is released.
export function showThumbnail(img, file) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  if (file) img.src = URL.createObjectURL(file);
  else img.removeAttribute("src");
}
