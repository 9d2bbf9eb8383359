// Batches: the caller's batch jobs with their progress (polled while any is running), and a
// new batch from pasted prompts, one per line, each with the create form's settings.

import { ApiError, api } from "./api.js";
import { clearErrors } from "./fielderrors.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
let timer = null;

function row(batch) {
  const item = document.createElement("li");
  item.className = "batch";
  item.dataset.batchId = batch.id;
  item.dataset.status = batch.status;
  const title = document.createElement("p");
  title.className = "batch-title";
  const name = batch.name || `Batch ${batch.id.slice(0, 8)}`;
  title.textContent = name;
  const progress = document.createElement("progress");
  progress.max = batch.total;
  progress.value = batch.finished;
  progress.setAttribute("aria-label", `Progress of ${name}`);
  const counts = document.createElement("p");
  counts.className = "batch-counts";
  const c = batch.counts;
  const eta = batch.status === "running" && batch.eta_seconds != null ? `, about ${Math.ceil(batch.eta_seconds)} s left` : "";
  counts.textContent = `${batch.finished} of ${batch.total} finished (${c.succeeded} succeeded, ` +
    `${c.failed} failed, ${c.cancelled} cancelled, ${c.running} running, ${c.queued} queued) — ${batch.status}${eta}`;
  item.append(title, progress, counts);
  if (batch.status === "running") {
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "danger";
    cancel.textContent = "Cancel batch";
    cancel.setAttribute("aria-label", `Cancel ${name}`);
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await api(`/batches/${encodeURIComponent(batch.id)}/cancel`, { method: "POST" });
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        $("batch-status").textContent = `Could not cancel: ${error.message}`;
      }
      loadBatches();
    });
    item.append(cancel);
  }
  return item;
}

export async function loadBatches() {
  clearTimeout(timer);
  try {
    const { data } = await api("/batches?limit=20");
    const list = $("batch-list");
    // Rows are replaced in place, so focus stays put when nothing under it changed.
    const focused = document.activeElement?.closest?.(".batch")?.dataset.batchId;
    list.replaceChildren(...data.batches.map(row));
    if (focused) list.querySelector(`[data-batch-id="${CSS.escape(focused)}"] button`)?.focus();
    if (!data.batches.length) $("batch-status").textContent = "No batches yet.";
    else if ($("batch-status").textContent === "No batches yet.") $("batch-status").textContent = "";
    if (data.batches.some((batch) => batch.status === "running")) {
      timer = setTimeout(loadBatches, POLL_MS);
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    $("batch-status").textContent = `Batches could not load: ${error.message}`;
  }
}

// A 422 on item i names loc ["body", "items", i, field]: tell which line it was.
function itemMessage(error, lines) {
  return error.fieldErrors.map(({ loc, message }) => {
    if (loc[0] === "items" && Number.isInteger(loc[1])) {
      return `Line ${loc[1] + 1} (“${lines[loc[1]] ?? ""}”): ${message}`;
    }
    return message;
  }).join(" ") || error.message;
}

export function installBatches({ itemParams }) {
  const form = $("batch-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const errorLine = $("batch-error");
    const lines = $("batch-prompts").value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (!lines.length) {
      errorLine.textContent = "Paste at least one prompt, one per line.";
      errorLine.hidden = false;
      $("batch-prompts").setAttribute("aria-invalid", "true");
      $("batch-prompts").focus();
      return;
    }
    const body = { items: lines.map((prompt) => ({ ...itemParams(), prompt })) };
    const name = $("batch-name").value.trim();
    if (name) body.name = name;
    $("batch-start").disabled = true;
    try {
      const { data } = await api("/batches", { method: "POST", json: body });
      $("batch-status").textContent = `Started ${data.name || "a batch"} of ${data.total} renders.`;
      $("batch-prompts").value = "";
      loadBatches();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      errorLine.textContent = itemMessage(error, lines);
      errorLine.hidden = false;
      $("batch-prompts").setAttribute("aria-invalid", "true");
    } finally {
      $("batch-start").disabled = false;
    }
  });
  $("batch-refresh").addEventListener("click", loadBatches);
}
