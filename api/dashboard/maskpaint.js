// "Paint a mask" over the input image: a canvas at the image's own pixel size laid over it
// (CSS scales both to fit), a brush and an eraser drawn with pointer events (mouse, pen and
// touch alike), clear and invert. The painted area shows semi-transparent over the image; it
// is sent as a black/white PNG data URL (white repaints, black keeps) at the image's size.

const $ = (id) => document.getElementById(id);
const INK = "#ff2d55"; // what a painted pixel looks like on screen; only its alpha is the mask
let size = null; // [width, height] of the input image, once it is decoded
let imageUrl = null;
let loading = 0; // which setMaskImage call is current (a newer image wins)
let stroke = null; // {id, x, y} of the pointer drawing now
const listeners = [];

function canvas() {
  return $("mask-canvas");
}

export function maskOn() {
  return Boolean(size) && $("mask-on").checked;
}

// The input image's pixel size, or null before it is decoded (or with no image).
export function imageSize() {
  return size;
}

// `fn()` is called whenever the mask or the image under it changes.
export function onMaskChange(fn) {
  listeners.push(fn);
}

function changed() {
  $("mask-coverage").textContent = maskOn() ? coverageText() : "";
  listeners.forEach((fn) => fn());
}

// The share of the image painted, as the status line under the canvas says it.
function coverageText() {
  const painted = paintedShare();
  if (painted === 0) return "Nothing painted: the input comes back unchanged.";
  return `${Math.max(1, Math.round(painted * 100))} % of the image will be repainted.`;
}

function paintedShare() {
  const { width, height } = canvas();
  if (!width || !height) return 0;
  const data = canvas().getContext("2d").getImageData(0, 0, width, height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) painted++;
  return painted / (width * height);
}

// Shows `file` under the mask (or forgets it): the canvas takes the image's pixel size, and
// whatever was painted for another image is cleared.
export function setMaskImage(file) {
  const ticket = ++loading;
  if (imageUrl) URL.revokeObjectURL(imageUrl);
  imageUrl = file ? URL.createObjectURL(file) : null;
  size = null;
  const img = $("mask-image");
  if (!file) {
    img.removeAttribute("src");
    canvas().width = 0;
    canvas().height = 0;
    $("mask-on").checked = false;
    syncVisible();
    changed();
    return Promise.resolve(null);
  }
  return new Promise((resolve) => {
    img.onload = () => {
      if (ticket !== loading) return;
      size = [img.naturalWidth, img.naturalHeight];
      canvas().width = size[0]; // resizing a canvas also clears it
      canvas().height = size[1];
      syncVisible();
      changed();
      resolve(size);
    };
    img.onerror = () => {
      if (ticket === loading) resolve(null); // upload.js's own checks name a bad file
    };
    img.src = imageUrl;
  });
}

function syncVisible() {
  $("mask-tools").hidden = !maskOn();
}

// Canvas pixels per CSS pixel: the brush is sized on screen, drawn at the image's scale.
function scale() {
  const box = canvas().getBoundingClientRect();
  return box.width ? canvas().width / box.width : 1;
}

function point(event) {
  const box = canvas().getBoundingClientRect();
  const ratio = scale();
  return { x: (event.clientX - box.left) * ratio, y: (event.clientY - box.top) * ratio };
}

function drawTo(from, to) {
  const context = canvas().getContext("2d");
  const erasing = $("mask-eraser").checked;
  context.save();
  context.globalCompositeOperation = erasing ? "destination-out" : "source-over";
  context.strokeStyle = INK;
  context.fillStyle = INK;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.lineWidth = Number($("mask-size").value) * scale();
  context.beginPath();
  if (from.x === to.x && from.y === to.y) {
    // A dot: a zero-length line draws nothing in some browsers.
    context.arc(to.x, to.y, context.lineWidth / 2, 0, 2 * Math.PI);
    context.fill();
  } else {
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
  }
  context.restore();
}

function installPointer() {
  const area = canvas();
  area.addEventListener("pointerdown", (event) => {
    if (!maskOn() || stroke || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    area.setPointerCapture(event.pointerId);
    const at = point(event);
    stroke = { id: event.pointerId, ...at };
    drawTo(at, at); // a dot, for a tap or a click
  });
  area.addEventListener("pointermove", (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    const at = point(event);
    drawTo(stroke, at);
    Object.assign(stroke, at);
  });
  const end = (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    stroke = null;
    changed();
  };
  area.addEventListener("pointerup", end);
  area.addEventListener("pointercancel", end);
}

export function clearMask() {
  const area = canvas();
  area.getContext("2d").clearRect(0, 0, area.width, area.height);
  changed();
}

// Painted ↔ unpainted, pixel for pixel (an edge's partial alpha flips too).
export function invertMask() {
  const area = canvas();
  if (!area.width || !area.height) return;
  const context = area.getContext("2d");
  const pixels = context.getImageData(0, 0, area.width, area.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    data[i] = 0xff;
    data[i + 1] = 0x2d;
    data[i + 2] = 0x55;
    data[i + 3] = 255 - data[i + 3];
  }
  context.putImageData(pixels, 0, 0);
  changed();
}

// The mask as the API takes it: an opaque PNG, white where painted (alpha ≥ half), black
// elsewhere, at the image's own size. Null without an image.
export function maskDataUrl() {
  const area = canvas();
  if (!size || !area.width || !area.height) return null;
  const out = document.createElement("canvas");
  out.width = area.width;
  out.height = area.height;
  const context = out.getContext("2d");
  const source = area.getContext("2d").getImageData(0, 0, area.width, area.height).data;
  const pixels = context.createImageData(area.width, area.height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const value = source[i + 3] >= 128 ? 255 : 0;
    data[i] = value;
    data[i + 1] = value;
    data[i + 2] = value;
    data[i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
  return out.toDataURL("image/png");
}

// The inpainting parameters of a request, or {} when no mask is being painted.
export function maskParams() {
  if (!maskOn()) return {};
  const area = document.querySelector('input[name="inpaint_area"]:checked')?.value ?? "whole";
  const params = { mask: maskDataUrl(), mask_blur: Number($("mask_blur").value), inpaint_area: area };
  if (area === "masked") params.padding = Number($("padding").value);
  return params;
}

export function installMaskPaint() {
  installPointer();
  $("mask-on").addEventListener("change", () => {
    syncVisible();
    changed();
  });
  $("mask-clear").addEventListener("click", clearMask);
  $("mask-invert").addEventListener("click", invertMask);
  const show = (id) => {
    $(`${id}-value`).textContent = $(id).value;
  };
  for (const id of ["mask-size", "mask_blur", "padding"]) {
    $(id).addEventListener("input", () => show(id));
    show(id);
  }
  const area = () => {
    $("padding").disabled = !$("inpaint-masked").checked;
  };
  for (const radio of document.querySelectorAll('input[name="inpaint_area"]')) {
    radio.addEventListener("change", area);
  }
  area();
}
