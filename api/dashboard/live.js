// Live jobs: one card per render started here, with a progress bar fed by the job's events
// (step previews included) and a cancel button.

import { ApiError, events } from "./api.js";
import { cancelJob, getJob } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const MAX_CARDS = 8;
const RECONNECTS = 5;

function label(params) {
  const prompt = params.prompt || (params.input_type !== "text" ? "Image to image" : "Render");
  return prompt.length > 80 ? `${prompt.slice(0, 77)}…` : prompt;
}

// What the render follows besides its prompt: a style reference, control images.
function references(params) {
  const parts = [];
  if (params.style_image) parts.push(`Style reference (${params.style_mode || "style"}, ${params.style_strength ?? 0.6})`);
  if (params.control?.length) parts.push(`Control: ${params.control.map((unit) => unit.type).join(", ")}`);
  if (params.mask) {
    const area = params.inpaint_area === "masked" ? `only masked, padding ${params.padding}` : "whole picture";
    parts.push(`Inpaint (${area}, blur ${params.mask_blur})`);
  }
  if (params.expand) {
    parts.push(`Outpaint: ${Object.entries(params.expand).map(([side, px]) => `${side} ${px} px`).join(", ")}`);
  }
  return parts.join(" · ");
}

// An edit's input beside its result (before | after); the blob URL lives as the card does.
function beforeFigure(input) {
  const figure = document.createElement("figure");
  figure.className = "live-before";
  const img = document.createElement("img");
  img.src = URL.createObjectURL(input);
  img.alt = "Before: the input image";
  const caption = document.createElement("figcaption");
  caption.textContent = "Before";
  figure.append(img, caption);
  return figure;
}

function card(job, params, input) {
  const item = document.createElement("li");
  item.className = "live-card";
  item.dataset.jobId = job.id;
  item.dataset.status = job.status;
  const title = document.createElement("p");
  title.className = "live-title";
  title.textContent = label(params);
  const refs = document.createElement("p");
  refs.className = "live-refs hint";
  refs.textContent = references(params);
  refs.hidden = !refs.textContent;
  const figure = document.createElement("div");
  figure.className = "live-preview";
  const img = document.createElement("img");
  img.alt = "";
  img.hidden = true;
  // A link to the full image once the job succeeds (no href, so no link, before then).
  const full = document.createElement("a");
  full.className = "full-image";
  full.target = "_blank";
  full.rel = "noopener";
  full.append(img);
  figure.append(full);
  if (input && (params.mask || params.expand)) {
    figure.classList.add("before-after");
    const after = document.createElement("figure");
    after.className = "live-after";
    const caption = document.createElement("figcaption");
    caption.textContent = "After";
    after.append(full, caption);
    figure.replaceChildren(beforeFigure(input), after);
  }
  const progress = document.createElement("progress");
  progress.max = 1;
  progress.value = 0;
  progress.setAttribute("aria-label", `Progress of “${label(params)}”`);
  const status = document.createElement("p");
  status.className = "live-status";
  status.setAttribute("role", "status");
  status.textContent = "Queued…";
  const actions = document.createElement("div");
  actions.className = "actions";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "danger";
  cancel.textContent = "Cancel";
  cancel.setAttribute("aria-label", `Cancel “${label(params)}”`);
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.className = "secondary";
  dismiss.textContent = "Dismiss";
  dismiss.hidden = true;
  dismiss.addEventListener("click", () => {
    item.remove();
    $("live-empty").hidden = $("live-list").children.length > 0;
    $("live-title").focus();
  });
  actions.append(cancel, dismiss);
  item.append(title, refs, figure, progress, status, actions);
  return { item, img, full, progress, status, cancel, dismiss };
}

export function trackJob(job, params, { onFinished, input = null }) {
  const list = $("live-list");
  const view = card(job, params, input);
  list.prepend(view.item);
  while (list.children.length > MAX_CARDS) {
    list.lastElementChild.querySelectorAll(".live-before img").forEach((img) => URL.revokeObjectURL(img.src));
    list.lastElementChild.remove();
  }
  $("live-empty").hidden = true;

  view.cancel.addEventListener("click", async () => {
    view.cancel.disabled = true;
    view.status.textContent = "Cancelling…";
    try {
      await cancelJob(job.id);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      view.status.textContent = `Could not cancel: ${error.message}`;
      view.cancel.disabled = false;
    }
  });

  const finish = (final) => {
    view.item.dataset.status = final.status;
    view.cancel.hidden = true;
    view.dismiss.hidden = false;
    if (final.status === "succeeded") view.progress.value = view.progress.max;
    if (final.status === "succeeded") {
      const output = final.outputs?.[0];
      if (output) {
        view.img.src = output.thumbnail_url || output.url; // small; the link has the full one
        view.full.href = output.url;
        view.img.alt = `${input && (params.mask || params.expand) ? "After" : "Result"}: ${label(params)}`;
        view.img.hidden = false;
      }
      const seconds = final.timings?.render_seconds;
      view.status.textContent = `Done${seconds != null ? ` in ${seconds.toFixed(1)} s` : ""} — seed ${output?.seed ?? "?"}.`;
    } else if (final.status === "cancelled") {
      view.status.textContent = "Cancelled.";
    } else {
      view.status.textContent = `Failed: ${final.error || "the render failed"}`;
    }
    onFinished(final);
  };

  follow(job, view, finish);
  return view.item;
}

async function follow(job, view, finish) {
  let lastId = null;
  for (let attempt = 0; attempt <= RECONNECTS; attempt++) {
    try {
      for await (const message of events(`/jobs/${encodeURIComponent(job.id)}/events`, { lastEventId: lastId })) {
        lastId = message.id ?? lastId;
        const data = JSON.parse(message.data);
        if (message.event === "started") {
          view.status.textContent = "Rendering…";
        } else if (message.event === "progress") {
          view.progress.max = data.total;
          view.progress.value = data.step;
          view.status.textContent = `Step ${data.step} of ${data.total}`;
          if (data.preview) {
            view.img.src = data.preview;
            view.img.alt = `Preview at step ${data.step}`;
            view.img.hidden = false;
          }
        } else if (FINISHED.has(message.event)) {
          finish(data);
          return;
        }
      }
    } catch (error) {
      if (!(error instanceof ApiError) && !(error instanceof TypeError)) throw error;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
        view.status.textContent = `Cannot follow this job: ${error.message}`;
        return;
      }
    }
    // The stream ended early (a restart, a dropped connection): look at the job itself.
    try {
      const current = await getJob(job.id);
      if (FINISHED.has(current.status)) {
        finish(current);
        return;
      }
    } catch {
      // try the stream again below
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
  }
  view.status.textContent = "Lost the connection to this job; see the gallery for its result.";
}
