// The gallery: the caller's jobs, newest first, a page at a time ("Load more"), filtered by
// status, style and model on the server. Each image shows its parameters (its record) and
// offers download, reuse in the form, a variation (new seed), use as input, upscale ×2, and
// compare.

import { ApiError } from "./api.js";
import { listJobs, paramsOf } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const PAGE = 12;

// Shown in this order; the record's other fields (versions, index...) are left out.
const SHOWN = [
  ["prompt", "Prompt"], ["user_prompt", "Your prompt"], ["negative_prompt", "Negative prompt"],
  ["style", "Style"], ["size", "Size"], ["seed", "Seed"], ["steps", "Steps"],
  ["guidance", "Guidance"], ["sampler", "Sampler"], ["lighting", "Lighting"],
  ["colors", "Palette"], ["texture", "Texture"], ["strength", "Strength"],
  ["loras", "LoRAs"], ["input_type", "Input"], ["style_reference", "Style reference"],
  ["controls", "Control"],
  ["mask", "Inpaint"], ["expand", "Outpaint"], ["model", "Model"],
];

// The record names reference images by their pixels' hash; a short prefix tells them apart.
const short = (hash) => (typeof hash === "string" ? hash.slice(0, 12) : "?");

function referenceText(reference) {
  if (!reference || typeof reference !== "object") return reference;
  return `${reference.mode ?? "style"}, strength ${reference.strength} · image ${short(reference.sha256)}`;
}

function controlsText(controls) {
  if (!Array.isArray(controls)) return controls;
  return controls.map((unit) => `${unit.type} × ${unit.scale} (${unit.start}–${unit.end})` +
                      `${unit.preprocess ? ", edges found" : ""} · image ${short(unit.sha256)}`).join("; ");
}

// The record's LoRAs: [{name, weight, hash, applied, note}]; a request's: [{name, weight}].
function lorasText(loras) {
  if (!Array.isArray(loras)) return loras;
  return loras.map((lora) => `${lora.name} × ${lora.weight}` +
                   (lora.hash ? ` · ${short(lora.hash)}` : "") +
                   (lora.applied === false ? ` (skipped${lora.note ? `: ${lora.note}` : ""})` : ""))
    .join("; ");
}

// A caller's own style is inlined in the job's request: an object with its name.
const styleName = (style) => (style && typeof style === "object" ? style.name : style);

// The record's mask: {sha256, blur, area, padding}; a request's alone names it "sha256:…".
function maskText(mask) {
  if (!mask || typeof mask !== "object") return typeof mask === "string" ? `mask ${short(mask.replace(/^sha256:/, ""))}` : mask;
  const area = mask.area === "masked" ? `only masked, padding ${mask.padding}` : "whole picture";
  return `${area}, blur ${mask.blur} · mask ${short(mask.sha256)}`;
}

function expandText(expand) {
  if (!expand || typeof expand !== "object") return expand;
  const sides = Object.entries(expand).filter(([, px]) => px).map(([side, px]) => `${side} ${px} px`);
  return sides.length ? sides.join(", ") : null;
}

const state = { cursor: null, loading: false, handlers: null, serial: 0 };

export function describe(params) {
  const shown = { ...params };
  if (shown.width && shown.height) shown.size = `${shown.width} × ${shown.height}`;
  if (shown.user_prompt === shown.prompt) delete shown.user_prompt;
  shown.style_reference = referenceText(shown.style_reference);
  shown.controls = controlsText(shown.controls);
  shown.loras = lorasText(shown.loras);
  shown.style = styleName(shown.style);
  shown.mask = maskText(shown.mask);
  shown.expand = expandText(shown.expand);
  return SHOWN.filter(([key]) => shown[key] != null && shown[key] !== "" &&
                                 !(Array.isArray(shown[key]) && !shown[key].length))
    .map(([key, title]) => ({ key, title, value: shown[key] }));
}

export function parameterList(params, differing = new Set()) {
  const list = document.createElement("dl");
  list.className = "params";
  for (const { key, title, value } of describe(params)) {
    const term = document.createElement("dt");
    term.textContent = title;
    const detail = document.createElement("dd");
    if (key === "colors") {
      for (const color of value) {
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.backgroundColor = color; // CSSOM, allowed by the CSP (no inline style)
        swatch.setAttribute("aria-hidden", "true");
        detail.append(swatch);
      }
      detail.append(value.join(", "));
    } else {
      detail.textContent = String(value);
    }
    if (differing.has(key)) {
      term.classList.add("differs");
      detail.classList.add("differs");
      const note = document.createElement("span");
      note.className = "visually-hidden";
      note.textContent = " (differs)";
      detail.append(note);
    }
    list.append(term, detail);
  }
  return list;
}

function button(text, describedBy, onClick, className = "secondary") {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  element.setAttribute("aria-describedby", describedBy);
  element.addEventListener("click", onClick);
  return element;
}

function entryCard(job, output) {
  const handlers = state.handlers;
  const item = document.createElement("li");
  item.className = "card";
  item.dataset.jobId = job.id;
  item.dataset.status = job.status;
  const captionId = `caption-${job.id}-${output ? output.index : "job"}`;
  const params = output ? { ...job.request, ...output.record } : job.request;
  const prompt = job.request.prompt || (job.request.input_type !== "text" ? "Image to image" : "(no prompt)");

  const figure = document.createElement("figure");
  if (output) {
    // The card shows the small WebP thumbnail (a page of 4K renders stays light); it links
    // to the full image. Jobs stored before thumbnails give the full URL as thumbnail_url.
    const full = document.createElement("a");
    full.className = "full-image";
    full.href = output.url;
    full.target = "_blank";
    full.rel = "noopener";
    const img = document.createElement("img");
    img.src = output.thumbnail_url || output.url;
    img.alt = prompt;
    img.loading = "lazy";
    img.width = output.width;
    img.height = output.height;
    full.append(img);
    figure.append(full);
  } else {
    const placeholder = document.createElement("div");
    placeholder.className = "placeholder";
    placeholder.textContent = job.status;
    figure.append(placeholder);
  }
  const caption = document.createElement("figcaption");
  caption.id = captionId;
  caption.textContent = prompt.length > 120 ? `${prompt.slice(0, 117)}…` : prompt;
  figure.append(caption);

  const meta = document.createElement("p");
  meta.className = "meta";
  const badge = document.createElement("span");
  badge.className = `badge status-${job.status}`;
  badge.textContent = job.status;
  meta.append(badge, ` ${job.model}${job.request.style ? ` · ${styleName(job.request.style)}` : ""}`);
  if (output?.seed != null) meta.append(` · seed ${output.seed}`);
  if (job.error) {
    const error = document.createElement("span");
    error.className = "card-error";
    error.textContent = ` ${job.error}`;
    meta.append(error);
  }

  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Parameters";
  details.append(summary, parameterList(params));

  const actions = document.createElement("div");
  actions.className = "actions";
  if (output) {
    const download = document.createElement("a");
    download.className = "button secondary";
    download.href = output.url;
    download.download = `spec2fractal-${job.id}-${output.index}.${output.format}`;
    download.textContent = "Download";
    download.setAttribute("aria-describedby", captionId);
    actions.append(download);
  }
  const reuse = paramsOf(job, output);
  actions.append(
    button("Reuse settings", captionId, () => handlers.onReuse(reuse)),
    button("Variation", captionId, () => handlers.onVariation(reuse)),
  );
  if (output) {
    actions.append(button("Use as input", captionId, () => handlers.onUseAsInput(output, reuse)));
    actions.append(button("Upscale ×2", captionId, () => handlers.onUpscale(job, output, reuse)));
    const pick = document.createElement("label");
    pick.className = "compare-pick";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.setAttribute("aria-describedby", captionId);
    box.addEventListener("change", () => handlers.onComparePick(box, {
      url: output.url, caption: prompt, params,
    }));
    pick.append(box, " Compare");
    actions.append(pick);
  }
  item.append(figure, meta, details, actions);
  return item;
}

function filters() {
  return { status: $("filter-status").value, style: $("filter-style").value,
           model: $("filter-model").value };
}

export async function loadGallery({ reset = false } = {}) {
  if (state.loading && !reset) return;
  const serial = ++state.serial; // a newer load (new filters) wins over an older one
  state.loading = true;
  const status = $("gallery-status");
  if (reset) state.cursor = null;
  status.textContent = "Loading…";
  try {
    const page = await listJobs({ ...filters(), cursor: state.cursor, limit: PAGE });
    if (serial !== state.serial) return;
    const list = $("gallery-list");
    if (reset) list.replaceChildren();
    for (const job of page.jobs) {
      if (job.status === "succeeded" && job.outputs.length) {
        job.outputs.forEach((output) => list.append(entryCard(job, output)));
      } else {
        list.append(entryCard(job, null));
      }
    }
    state.cursor = page.next_cursor;
    $("gallery-more").hidden = !state.cursor;
    const shown = list.children.length;
    status.textContent = shown ? `${shown} shown${state.cursor ? "; more below" : ""}.`
                               : "No renders yet match these filters.";
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (serial === state.serial) status.textContent = `The gallery could not load: ${error.message}`;
  } finally {
    if (serial === state.serial) state.loading = false;
  }
}

export function setStyleFilter(styles) {
  const select = $("filter-style");
  const chosen = select.value;
  select.replaceChildren(select.options[0]);
  for (const style of styles) {
    const option = document.createElement("option");
    option.value = style.name;
    option.textContent = style.name;
    select.append(option);
  }
  select.value = chosen;
}

export function installGallery(handlers) {
  state.handlers = handlers;
  for (const id of ["filter-status", "filter-style", "filter-model"]) {
    $(id).addEventListener("change", () => loadGallery({ reset: true }));
  }
  $("gallery-refresh").addEventListener("click", () => loadGallery({ reset: true }));
  $("gallery-more").addEventListener("click", () => loadGallery());
  // Infinite scroll as well as the button: load the next page when the button comes near.
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting) && state.cursor) loadGallery();
    }, { rootMargin: "200px" }).observe($("gallery-more"));
  }
}
