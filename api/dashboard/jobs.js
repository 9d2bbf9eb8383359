// Jobs through the API: queue one (multipart, so an input image goes as a file; JSON with
// data URLs when it carries a style reference or control images), cancel one, list them.

import { api } from "./api.js";
import { readDataUrl } from "./imagepick.js";

// Request fields that POST /generate takes in JSON only: reference images, the mask (a
// data URL, as the style reference), expand (an object) and loras (a list of objects).
const JSON_FIELDS = ["style_image", "control", "mask", "expand", "loras"];

// Parameters → multipart/form-data; undefined values are left out (the server's default).
export function formData(params, image) {
  const form = new FormData();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((item) => form.append(name, String(item)));
    else form.append(name, String(value));
  }
  if (image) form.append("image", image, image.name || "input.png");
  return form;
}

// Parameters → a JSON body; undefined values are left out, the input image a data URL.
export async function jsonBody(params, image) {
  const body = Object.fromEntries(Object.entries(params).filter(
    ([, value]) => value !== undefined && value !== null && value !== ""));
  if (image) body.image = await readDataUrl(image);
  return body;
}

// Queues a render and answers at once (202) with the job; follow it with its events.
export async function submitJob(params, image) {
  const body = JSON_FIELDS.some((name) => params[name] !== undefined)
    ? { json: await jsonBody(params, image) } : { form: formData(params, image) };
  const { data } = await api("/generate", {
    method: "POST", ...body, headers: { Prefer: "respond-async" },
  });
  return data.job ?? data; // 202: the job; 200 (already finished): {job, ...}
}

// One of a finished job's images, larger, as a new job (the server reads the image itself).
export async function upscaleJob(id, index, scale = 2) {
  const { data } = await api(`/jobs/${encodeURIComponent(id)}/upscale`, {
    method: "POST", json: { index, scale }, headers: { Prefer: "respond-async" },
  });
  return data.job ?? data;
}

export async function cancelJob(id) {
  return (await api(`/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" })).data;
}

export async function getJob(id) {
  return (await api(`/jobs/${encodeURIComponent(id)}`)).data;
}

export async function listJobs({ cursor, status, style, model, limit = 12 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (cursor) query.set("cursor", cursor);
  if (status) query.set("status", status);
  if (style) query.set("style", style);
  if (model) query.set("model", model);
  return (await api(`/jobs?${query}`)).data;
}

// The parameters of one output as a request would give them again: the job's request, with
// that output's own seed (each of n images has its own).
export function paramsOf(job, output) {
  const params = { ...job.request };
  // A caller's own style is inlined in the job (an object): reuse names it again.
  if (params.style && typeof params.style === "object") params.style = params.style.name;
  delete params.image;
  delete params.image_url;
  // Reference images and masks are stored by hash: reuse and variations go without them
  // (and without the edit's settings, which need a mask or an input image).
  for (const name of ["style_image", "style_strength", "style_mode", "control", "mask",
                      "mask_blur", "inpaint_area", "padding", "expand"]) delete params[name];
  if (output?.seed != null) params.seed = output.seed;
  params.n = 1;
  params.output_format = job.output_format;
  return params;
}
